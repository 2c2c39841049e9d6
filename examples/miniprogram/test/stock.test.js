'use strict';
// The stock page against a real hub: the board fills from the snapshot and then moves
// with every tick, the chart is filled from `history` and then live quotes and is drawn
// on one Canvas 2D context; hidden, the page does nothing, and shown again it catches up;
// plus the chart function on its own, with a recording context.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startHub } = require('./harness/hub-process');
const { launch, snapshot } = require('./harness/miniprogram');
const { recordingCanvasContext } = require('./harness/wx-shim');
const { waitFor } = require('./harness/wait');
const { drawLineChart, mergeHistory, appendQuote, UP_COLOR, DOWN_COLOR } = require('../utils/chart');

const STOCK = 'pages/stock/stock';
const SYMBOLS = ['600519', '000001', '300750', '601318', '000858', '002594'];

const ops = (ctx, op) => ctx.calls.filter((c) => c.op === op);
/** The calls of the last drawing: from the last clearRect on. */
const lastDrawing = (ctx) => {
  const at = ctx.calls.map((c) => c.op).lastIndexOf('clearRect');
  return { calls: at < 0 ? [] : ctx.calls.slice(at) };
};
const listeners = (hub) => Object.keys(hub.listeners).reduce((n, type) => n + hub.listeners[type].length, 0);
const groups = (hub) => snapshot(hub.identity().groups.map((g) => g.group)).sort();

let hub;
before(async () => {
  hub = await startHub({ args: ['--seed', '42'] });
});
after(async () => {
  if (hub) await hub.kill();
});

test('the stock page shows the snapshot, then ticks, and charts history then quotes', async (t) => {
  // The hub has been ticking for a while before anyone looks: history has a past.
  const watcher = launch({ config: { hubUrl: hub.url } });
  t.after(() => watcher.close());
  const early = watcher.openPage(STOCK);
  await waitFor(() => early.data.ticks >= 3, { what: 'the market to tick', detail: () => early.data });
  // Every quote up to here is in the past for the next page: only `history` can show it.
  const past = early.data.lastTick;
  const mp = launch({ config: { hubUrl: hub.url } });
  const appListeners = listeners(mp.app.hub); // the app's own, before any page
  t.after(() => mp.close());

  const page = mp.openPage(STOCK);
  await waitFor(() => page.data.quotes.length === SYMBOLS.length, {
    what: 'the board snapshot',
    detail: () => page.data,
  });
  const board = snapshot(page.data.quotes);
  assert.deepEqual(board.map((q) => q.symbol), SYMBOLS);
  assert.equal(board[0].name, '贵州茅台');
  for (const row of board) {
    assert.match(row.price, /^\d+\.\d\d$/);
    assert.match(row.changePct, /^[+-]?\d+\.\d\d%$/);
    assert.ok(['up', 'down', 'flat'].includes(row.trend));
  }

  // Live: more ticks arrive, each newer than the last.
  const firstTick = page.data.lastTick;
  const firstCount = page.data.ticks;
  await waitFor(() => page.data.ticks >= firstCount + 3, { what: 'three more ticks', detail: () => page.data.ticks });
  assert.ok(page.data.lastTick > firstTick, 'tick timestamps move on');

  // The chart shows the first symbol, from history (older than this page) on.
  await waitFor(() => page.data.chart.symbol === SYMBOLS[0] && page.data.chart.points > 3, {
    what: 'the chart to fill',
    detail: () => page.data.chart,
  });
  assert.equal(page.data.selected, SYMBOLS[0]);
  assert.ok(page.data.chart.from < past, 'the chart starts before the page opened: history');
  const times = page.series.map((q) => q.ts);
  assert.ok(times.every((ts, i) => i === 0 || ts > times[i - 1]), 'oldest first, no repeats');
  const points = page.data.chart.points;
  await waitFor(() => page.data.chart.points >= points + 2, {
    what: 'live quotes to extend the chart',
    detail: () => page.data.chart,
  });

  // And it was drawn, on a Canvas 2D found once: one node, one context, scaled by the
  // pixel ratio; the old wx.createCanvasContext is not used.
  assert.equal(mp.wx.canvas('stockChart').length, 0, 'no wx.createCanvasContext');
  assert.equal(mp.wx.queries.length, 1, 'the node is looked up once');
  const node = mp.canvasNode(page, 'stockChart');
  assert.ok(node, 'the page found its <canvas type="2d" id="stockChart">');
  assert.equal(node.contexts.length, 1);
  assert.deepEqual([node.width, node.height], [375 * 2, 200 * 2], 'the bitmap at the pixel ratio');
  const ctx = node.contexts[0];
  assert.deepEqual(ctx.calls[0], { op: 'scale', args: [2, 2] });
  assert.ok(ops(ctx, 'clearRect').length > 2, 'redrawn as quotes arrive');
  // The last drawing: a line through every point (on the CSS-pixel canvas), no draw().
  const drawing = lastDrawing(ctx);
  assert.deepEqual(drawing.calls[0].args, [0, 0, 375, 200]);
  const drawnPoints = page.series.length;
  assert.equal(ops(drawing, 'lineTo').length, drawnPoints - 1 + 1 /* the open's baseline */);
  assert.equal(ops(drawing, 'stroke').length, 2);
  assert.ok(ops(drawing, 'set').some((c) => c.args[0] === 'strokeStyle'), 'styles set as properties');
  const xs = ops(drawing, 'lineTo').slice(1).map((c) => c.args[0]);
  assert.ok(xs.every((x, i) => i === 0 || x > xs[i - 1]), 'time runs left to right');

  // Picking another symbol: its own history and quotes, the old group left.
  const pickedAt = page.data.lastTick;
  page.onPick({ currentTarget: { dataset: { symbol: '300750' } } });
  await waitFor(() => page.data.chart.symbol === '300750' && page.data.chart.points > 3, {
    what: 'the chart of 300750',
    detail: () => page.data.chart,
  });
  assert.equal(page.data.chart.name, '宁德时代');
  assert.ok(page.data.chart.from < pickedAt, 'history of the new symbol');
  assert.ok(page.series.every((q) => q.symbol === '300750'), 'no quote of the old symbol');
  assert.equal(mp.wx.storage.get('stock.symbol'), '300750', 'the pick is remembered');
  assert.deepEqual(groups(mp.app.hub), ['stock', 'stock.300750']);

  // Leaving the page ends its subscriptions and listeners.
  mp.closePage(page);
  assert.equal(listeners(mp.app.hub), appListeners, 'the page removed its listeners');
  assert.deepEqual(groups(mp.app.hub), []);
});

test('a remembered symbol is charted first', async (t) => {
  const mp = launch({ config: { hubUrl: hub.url }, storage: { 'stock.symbol': '002594' } });
  t.after(() => mp.close());
  const page = mp.openPage(STOCK);
  await waitFor(() => page.data.chart.symbol === '002594' && page.data.chart.points > 0, {
    what: 'the remembered symbol',
    detail: () => page.data.chart,
  });
  assert.equal(page.data.chart.name, '比亚迪');
});

test('hidden, the quotes page does no setData and no drawing; shown again, it resumes', async (t) => {
  // Another app keeps watching: its ticks say time has passed, without sleeping.
  const watcher = launch({ config: { hubUrl: hub.url } });
  const mp = launch({ config: { hubUrl: hub.url } });
  t.after(() => {
    watcher.close();
    mp.close();
  });
  const clock = watcher.openPage(STOCK);
  const page = mp.openPage(STOCK);
  await waitFor(() => page.data.ticks >= 2 && page.data.chart.points > 3, { what: 'the page live', detail: () => page.data });
  await waitFor(() => mp.canvasNode(page, 'stockChart'), { what: 'the canvas' });
  const ctx = mp.canvasNode(page, 'stockChart').contexts[0];

  // The app goes to the background: the page's onHide.
  mp.hide();
  const setDataBefore = mp.setDataCalls(page).length;
  const callsBefore = ctx.calls.length;
  const ticksBefore = page.data.ticks;
  const pointsBefore = page.series.length;
  const seen = clock.data.ticks;
  await waitFor(() => clock.data.ticks >= seen + 5, { what: 'five ticks elsewhere', detail: () => clock.data.ticks });
  assert.equal(mp.setDataCalls(page).length, setDataBefore, 'no setData while hidden');
  assert.equal(ctx.calls.length, callsBefore, 'no drawing while hidden');
  assert.equal(page.data.ticks, ticksBefore);
  assert.deepEqual(groups(mp.app.hub), [], 'the market groups are left while hidden');

  // Back: subscribed again, the board moves, the chart's gap is filled from history.
  mp.show();
  await waitFor(() => page.data.ticks >= ticksBefore + 2, { what: 'ticks again', detail: () => page.data.ticks });
  assert.deepEqual(groups(mp.app.hub), ['stock', 'stock.' + SYMBOLS[0]]);
  await waitFor(() => page.series.length >= pointsBefore + 5, {
    what: 'the chart to catch up on the hidden time',
    detail: () => [pointsBefore, page.series.length],
  });
  const times = page.series.map((q) => q.ts);
  assert.ok(times.every((ts, i) => i === 0 || ts > times[i - 1]), 'oldest first, no repeats');
  assert.ok(ctx.calls.length > callsBefore, 'drawn again');
  assert.equal(mp.canvasNode(page, 'stockChart').contexts.length, 1, 'on the same context');
});

test('drawLineChart draws a line through every price on any canvas context', () => {
  const ctx = recordingCanvasContext('c');
  const scale = drawLineChart(ctx, [10, 12, 11, 13], { width: 200, height: 100, padding: 10, base: 10 });
  assert.deepEqual(scale, { min: 10, max: 13 });
  assert.equal(ctx.calls[0].op, 'clearRect');
  const moves = ops(ctx, 'moveTo');
  const lines = ops(ctx, 'lineTo');
  // Baseline at the open (10 = the bottom), then the price line.
  assert.deepEqual(moves[0].args, [10, 90]);
  assert.deepEqual(lines[0].args, [190, 90]);
  assert.deepEqual(moves[1].args, [10, 90]); // 10 at the left, at the bottom
  assert.deepEqual(lines.slice(1).map((c) => c.args[0]), [70, 130, 190]);
  assert.deepEqual(lines[lines.length - 1].args, [190, 10]); // 13: the top
  assert.ok(lines[1].args[1] < lines[2].args[1], '12 is drawn higher than 11');
  assert.deepEqual(ops(ctx, 'setStrokeStyle').map((c) => c.args[0]).slice(-1), [UP_COLOR]);
  assert.deepEqual(ops(ctx, 'fillText').map((c) => c.args[0]), ['13.00', '10.00']);
  assert.equal(ctx.calls[ctx.calls.length - 1].op, 'draw');

  // Falling below the open: green.
  const down = recordingCanvasContext('c');
  drawLineChart(down, [10, 9], { width: 100, height: 100, base: 10 });
  assert.deepEqual(ops(down, 'setStrokeStyle').map((c) => c.args[0]).slice(-1), [DOWN_COLOR]);

  // A 2D canvas context has properties instead of setters, and no draw().
  const calls = [];
  const plain = {
    clearRect: () => calls.push('clearRect'),
    beginPath: () => calls.push('beginPath'),
    moveTo: () => calls.push('moveTo'),
    lineTo: () => calls.push('lineTo'),
    stroke: () => calls.push('stroke'),
    fillText: () => calls.push('fillText'),
    setLineDash: () => calls.push('setLineDash'),
  };
  drawLineChart(plain, [1, 2], { width: 100, height: 50 });
  assert.ok(plain.strokeStyle && plain.lineWidth === 2 && plain.font === '10px sans-serif');
  assert.equal(calls.filter((c) => c === 'lineTo').length, 1);
  assert.ok(!calls.includes('draw'));
});

test('drawLineChart copes with empty and flat series', () => {
  const empty = recordingCanvasContext('c');
  assert.equal(drawLineChart(empty, [], { width: 100, height: 50 }), null);
  assert.deepEqual(empty.calls.map((c) => c.op), ['clearRect', 'draw']);

  const flat = recordingCanvasContext('c');
  drawLineChart(flat, [5, 5, 5], { width: 100, height: 50 });
  const coords = flat.calls.filter((c) => c.op === 'moveTo' || c.op === 'lineTo').flatMap((c) => c.args);
  assert.ok(coords.every(Number.isFinite), 'no NaN from a zero range');

  const one = recordingCanvasContext('c');
  drawLineChart(one, [5], { width: 100, height: 50 });
  assert.equal(ops(one, 'moveTo').length, 1);
});

test('history and live quotes merge without duplicates or disorder', () => {
  const q = (ts) => ({ ts, price: ts });
  // A live quote that arrived before the history reply, and one that is in both.
  assert.deepEqual(mergeHistory([q(1), q(2), q(3)], [q(3), q(4)], 10), [q(1), q(2), q(3), q(4)]);
  assert.deepEqual(mergeHistory([q(1), q(2), q(3)], [q(4)], 2), [q(3), q(4)]);
  assert.deepEqual(mergeHistory([], [q(4)], 10), [q(4)]);
  assert.deepEqual(appendQuote([q(1)], q(2), 10), [q(1), q(2)]);
  const series = [q(1), q(2)];
  assert.equal(appendQuote(series, q(2), 10), series, 'a repeat is dropped');
  assert.deepEqual(appendQuote([q(1), q(2)], q(3), 2), [q(2), q(3)]);
});
