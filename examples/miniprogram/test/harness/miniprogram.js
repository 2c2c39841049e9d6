'use strict';
// Runs a mini-program's own JS files in Node: one vm context per instance, holding the
// globals WeChat provides (wx, App, Page, getApp, getCurrentPages, timers), and a small
// CommonJS loader resolving require() the way WeChat does (relative to the file, or from
// the mini-program root for paths starting with '/'). Two instances in one process share
// nothing: each has its own modules, storage, sockets and timers.

const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');
const { createWx, canvas2dNode } = require('./wx-shim');

const EXAMPLE_ROOT = path.resolve(__dirname, '../..');

/**
 * Timers for one instance, so that close() can stop all of them (and a closed instance
 * starts no new ones), which lets the test process exit.
 */
function createTimers() {
  const live = new Set();
  let stopped = false;
  const track = (make, clear) => (fn, ms, ...args) => {
    if (stopped) return null;
    const handle = make(() => {
      if (make === setTimeout) live.delete(handle);
      fn(...args);
    }, ms);
    handle.clear = clear;
    live.add(handle);
    return handle;
  };
  const untrack = (clear) => (handle) => {
    if (!handle) return;
    live.delete(handle);
    clear(handle);
  };
  return {
    globals: {
      setTimeout: track(setTimeout, clearTimeout),
      clearTimeout: untrack(clearTimeout),
      setInterval: track(setInterval, clearInterval),
      clearInterval: untrack(clearInterval),
    },
    stop() {
      stopped = true;
      for (const handle of live) handle.clear(handle);
      live.clear();
    },
  };
}

/** setData as WeChat does it: keys may be paths ("a.b", "list[2].x"), values are copied. */
function applySetData(data, patch, copy) {
  for (const [key, value] of Object.entries(patch)) {
    const parts = key.match(/[^.[\]]+/g);
    let target = data;
    for (const part of parts.slice(0, -1)) {
      if (target[part] === undefined || target[part] === null) target[part] = {};
      target = target[part];
    }
    target[parts[parts.length - 1]] = value === undefined ? undefined : copy(value);
  }
}

/**
 * The element `selector` ('#id') of a page's WXML, as SelectorQuery.fields() reports it:
 * its size from its style (`width: {{chartWidth}}px`, bound to the page's data), and for a
 * <canvas type="2d"> its node, one per page and id. Null when the WXML has no such id.
 */
function selectInPage(page, wxml, nodes, selector, fields) {
  const m = /^#([A-Za-z0-9_-]+)$/.exec(selector);
  if (!m || !wxml) return null;
  const id = m[1];
  const tag = new RegExp(`<([a-z-]+)\\b[^>]*\\sid="${id}"[^>]*>`).exec(wxml);
  if (!tag) return null;
  const attr = (name) => {
    const a = new RegExp(`\\s${name}="([^"]*)"`).exec(tag[0]);
    return a ? a[1].replace(/\{\{\s*([A-Za-z_$][\w$]*)\s*\}\}/g, (_, key) => String(page.data[key])) : '';
  };
  const style = attr('style');
  const px = (prop) => {
    const v = new RegExp(`(?:^|;)\\s*${prop}\\s*:\\s*([\\d.]+)px`).exec(style);
    return v ? Number(v[1]) : 0;
  };
  const result = { id };
  if (fields.size) {
    result.width = px('width');
    result.height = px('height');
  }
  if (fields.node) {
    let node = null;
    if (tag[1] === 'canvas' && attr('type') === '2d') {
      if (!nodes.has(id)) nodes.set(id, canvas2dNode(id));
      node = nodes.get(id);
    }
    result.node = node;
  }
  return result;
}

/**
 * Launches the mini-program at `root` (default: examples/miniprogram) as WeChat would:
 * loads app.js, calls onLaunch and onShow. Options:
 * - config: values merged into the exports of root/config.js once it loads (how a
 *   developer would edit it; the hub URL in particular);
 * - storage: initial wx storage; hosts: URL host rewrites (see wx-shim).
 */
function launch({ root = EXAMPLE_ROOT, config = {}, storage = {}, hosts = {} } = {}) {
  const pageDefs = new Map(); // route -> the object passed to Page()
  const pages = []; // open page instances, like getCurrentPages(); the last one is shown
  const extras = new WeakMap(); // page -> { wxml, nodes, setData: [patches] }
  const shown = () => pages[pages.length - 1];
  const { wx, controls } = createWx({
    storage,
    hosts,
    selectNode: (selector, fields) => {
      const page = shown();
      if (!page) return null;
      const extra = extras.get(page);
      return selectInPage(page, extra.wxml, extra.nodes, selector, fields);
    },
  });
  const timers = createTimers();
  let app = null;
  let loadingRoute = null;

  const sandbox = Object.assign(
    {
      wx,
      console,
      App: (def) => {
        app = def;
      },
      Page: (def) => {
        if (!loadingRoute) throw new Error('Page() called outside a page file');
        pageDefs.set(loadingRoute, def);
      },
      getApp: () => app,
      getCurrentPages: () => pages.slice(),
    },
    timers.globals
  );
  const context = vm.createContext(sandbox, { name: 'mini-program ' + path.basename(root) });
  // Page data is copied with the instance's own JSON, like WeChat's copy between threads.
  const innerJSON = vm.runInContext('JSON', context);
  const copy = (value) => innerJSON.parse(innerJSON.stringify(value));

  const modules = new Map();
  function resolveFrom(dir, spec) {
    let file = spec.startsWith('/') ? path.join(root, spec) : path.resolve(dir, spec);
    if (!file.endsWith('.js')) file += '.js';
    if (!file.startsWith(root + path.sep)) throw new Error(`require outside the mini-program: ${spec}`);
    return file;
  }
  function load(file) {
    if (modules.has(file)) return modules.get(file).exports;
    const module = { exports: {} };
    modules.set(file, module);
    const source = fs.readFileSync(file, 'utf8');
    const wrapper = vm.runInContext(`(function (require, module, exports) {${source}\n})`, context, {
      filename: file,
    });
    wrapper((spec) => load(resolveFrom(path.dirname(file), spec)), module, module.exports);
    if (file === path.join(root, 'config.js')) Object.assign(module.exports, config);
    return module.exports;
  }

  load(path.join(root, 'app.js'));
  if (!app) throw new Error(`${root}/app.js did not call App()`);
  const launchInfo = { path: '', query: {}, scene: 1001 };
  if (app.onLaunch) app.onLaunch(launchInfo);
  if (app.onShow) app.onShow(launchInfo);

  return {
    app,
    wx: controls,

    /**
     * Opens the page at `route` (e.g. 'pages/chat/chat'), as a tab switch or a navigation
     * does: the page shown until now gets onHide; the new one onLoad(query), onShow, and
     * then (once rendered, a moment later) onReady.
     */
    openPage(route, query = {}) {
      if (!pageDefs.has(route)) {
        loadingRoute = route;
        try {
          load(path.join(root, route + '.js'));
        } finally {
          loadingRoute = null;
        }
      }
      const def = pageDefs.get(route);
      if (!def) throw new Error(`${route}.js did not call Page()`);
      const page = {};
      for (const [key, value] of Object.entries(def)) {
        if (key !== 'data') page[key] = value;
      }
      page.route = route;
      page.data = copy(def.data || {});
      const wxmlFile = path.join(root, route + '.wxml');
      const extra = { wxml: fs.existsSync(wxmlFile) ? fs.readFileSync(wxmlFile, 'utf8') : '', nodes: new Map(), setData: [] };
      extras.set(page, extra);
      page.setData = (patch, callback) => {
        extra.setData.push(copy(patch));
        applySetData(page.data, patch, copy);
        if (typeof callback === 'function') setImmediate(callback);
      };
      const previous = shown();
      if (previous && previous.onHide) previous.onHide();
      pages.push(page);
      if (page.onLoad) page.onLoad(query);
      if (page.onShow) page.onShow();
      if (page.onReady) {
        setImmediate(() => {
          if (pages.includes(page)) page.onReady();
        });
      }
      return page;
    },

    /** Navigates back from `page`: onUnload; the page under it, if it was on top, onShow. */
    closePage(page) {
      const wasShown = shown() === page;
      const at = pages.indexOf(page);
      if (at >= 0) pages.splice(at, 1);
      if (page.onUnload) page.onUnload();
      const now = shown();
      if (wasShown && now && now.onShow) now.onShow();
    },

    /** The user brings the mini-program back to the foreground: the app's onShow, then the page's. */
    show() {
      if (app.onShow) app.onShow(launchInfo);
      controls.appShow(launchInfo);
      const page = shown();
      if (page && page.onShow) page.onShow();
    },

    /** The user switches away: the page's onHide, then the app's. */
    hide() {
      const page = shown();
      if (page && page.onHide) page.onHide();
      if (app.onHide) app.onHide();
      controls.appHide();
    },

    /** Every setData patch `page` made, oldest first (copies). */
    setDataCalls(page) {
      return extras.get(page).setData;
    },

    /** The Canvas 2D node `page` got for the element with `id`, if it asked for it. */
    canvasNode(page, id) {
      return extras.get(page).nodes.get(id) || null;
    },

    /** Ends the instance: every timer and socket, without running any more of its code. */
    close() {
      timers.stop();
      controls.closeAll();
    },
  };
}

/** A plain copy of page data (or anything from an instance) for assertions. */
function snapshot(value) {
  return JSON.parse(JSON.stringify(value));
}

module.exports = { launch, snapshot, EXAMPLE_ROOT };
