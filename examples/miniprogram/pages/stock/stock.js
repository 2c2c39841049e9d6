// Quotes: every symbol's live price, and a line chart of the one picked.
//
// The board comes from the `stock` group (one `tick` with every quote, per tick). The
// chart comes from `history` (the past) and then the `stock.<SYMBOL>` group (one `quote`
// per tick). Both groups send their latest state on subscribing, so the page has
// something to show at once, and the client library renews them after a reconnect.
//
// Hidden (another tab, or the app in the background), the page does nothing: it leaves
// both groups, and ignores what still arrives before the hub has read that, with no
// setData and no drawing. Shown again, it subscribes again and fills the gap in the chart
// from `history`.
//
// The chart is a Canvas 2D (<canvas type="2d">, base library 2.9.0+): its node is looked
// up once, when the page is ready, and its context kept for every redraw.
const { drawLineChart, mergeHistory, appendQuote } = require('../../utils/chart.js');
const { showError } = require('../../utils/errors.js');

const CANVAS_SELECTOR = '#stockChart';
const SYMBOL_KEY = 'stock.symbol'; // storage key of the symbol last picked
const MAX_POINTS = 300; // the hub keeps 300 quotes per symbol by default
const CHART_HEIGHT = 200;

// What needs no toast: the library tries again, or the page asked for it.
const QUIET = { timeout: true, disconnected: true, cancelled: true, closed: true };
const STOCK_ERRORS = { not_found: '没有这只股票' };

function signed(n) {
  return (n > 0 ? '+' : '') + n.toFixed(2);
}

/** One board row, formatted here because WXML cannot call functions. */
function toRow(q) {
  return {
    symbol: q.symbol,
    name: q.name,
    price: q.price.toFixed(2),
    change: signed(q.change),
    changePct: signed(q.change_pct) + '%',
    trend: q.change > 0 ? 'up' : q.change < 0 ? 'down' : 'flat',
  };
}

function windowInfo() {
  // getWindowInfo replaced getSystemInfoSync in base library 2.20.1.
  return wx.getWindowInfo ? wx.getWindowInfo() : wx.getSystemInfoSync();
}

Page({
  data: {
    online: false,
    quotes: [], // board rows, in the hub's symbol order
    ticks: 0, // ticks received, shown as a sign of life
    lastTick: 0,
    selected: '',
    chart: { symbol: '', name: '', points: 0, from: 0, to: 0, price: '', trend: 'flat' },
    chartWidth: 320,
    chartHeight: CHART_HEIGHT,
  },

  onLoad(query) {
    this.hub = getApp().hub;
    this.series = []; // the picked symbol's quotes, oldest first (not page data: too big)
    this.visible = false;
    this.canvas = null; // {ctx, width, height} once the node is found
    this.setData({ chartWidth: windowInfo().windowWidth || 320 });
    this.offs = [
      this.hub.on('state', (e) => {
        if (this.visible) this.setData({ online: e.state === 'open' });
      }),
      this.hub.on('tick', (t) => {
        if (this.visible) this.onTick(t);
      }),
      this.hub.on('quote', (e) => {
        if (this.visible) this.onQuote(e.quote);
      }),
      // After a reconnect the chart may have a gap, or the hub may have restarted with a
      // new market: fetch the history again.
      this.hub.on('open', () => {
        if (this.visible) this.loadHistory();
      }),
    ];
    this.wanted = (query && query.symbol) || wx.getStorageSync(SYMBOL_KEY) || '';
  },

  onShow() {
    if (this.visible) return;
    this.visible = true;
    this.setData({ online: this.hub.isOpen() });
    this.quiet(this.hub.subscribe('stock'));
    const symbol = this.data.selected;
    if (symbol) {
      this.quiet(this.hub.subscribe('stock.' + symbol));
      this.redraw(); // what was there before; the history fills the gap
      this.loadHistory();
    }
  },

  onReady() {
    wx.createSelectorQuery()
      .select(CANVAS_SELECTOR)
      .fields({ node: true, size: true })
      .exec((res) => {
        const found = res && res[0];
        if (!found || !found.node) return;
        const canvas = found.node;
        const ratio = windowInfo().pixelRatio || 1;
        // The bitmap at the screen's resolution; drawing in CSS pixels through the scale.
        canvas.width = found.width * ratio;
        canvas.height = found.height * ratio;
        const ctx = canvas.getContext('2d');
        ctx.scale(ratio, ratio);
        this.canvas = { ctx, width: found.width, height: found.height };
        if (this.visible) this.draw();
      });
  },

  onHide() {
    if (!this.visible) return;
    this.visible = false;
    this.hub.unsubscribe('stock');
    if (this.data.selected) this.hub.unsubscribe('stock.' + this.data.selected);
  },

  onUnload() {
    this.onHide();
    this.offs.forEach((off) => off());
  },

  quiet(promise) {
    promise.catch((err) => {
      if (!QUIET[err.code]) showError(err, STOCK_ERRORS);
    });
  },

  onTick(tick) {
    this.setData({
      quotes: tick.quotes.map(toRow),
      ticks: this.data.ticks + 1,
      lastTick: tick.ts,
    });
    // The hub decides which symbols exist: pick one once the first tick tells us.
    if (!this.data.selected && tick.quotes.length) {
      const wanted = tick.quotes.some((q) => q.symbol === this.wanted);
      this.select(wanted ? this.wanted : tick.quotes[0].symbol);
    }
  },

  onPick(e) {
    const symbol = e.currentTarget.dataset.symbol;
    wx.setStorageSync(SYMBOL_KEY, symbol);
    this.select(symbol);
  },

  select(symbol) {
    const previous = this.data.selected;
    if (symbol === previous) return;
    if (previous) this.hub.unsubscribe('stock.' + previous);
    this.series = [];
    this.setData({ selected: symbol });
    this.redraw();
    // The subscription sends the latest quote at once; the history fills in behind it.
    this.quiet(this.hub.subscribe('stock.' + symbol));
    this.loadHistory();
  },

  loadHistory() {
    const symbol = this.data.selected;
    if (!symbol) return;
    this.hub
      .history(symbol, { limit: MAX_POINTS })
      .then((reply) => {
        if (!this.visible || reply.symbol !== this.data.selected) return; // hidden, or picked another
        this.series = mergeHistory(reply.quotes, this.series, MAX_POINTS);
        this.redraw();
      })
      .catch((err) => {
        if (!QUIET[err.code]) showError(err, STOCK_ERRORS);
      });
  },

  onQuote(quote) {
    if (quote.symbol !== this.data.selected) return; // a late one for the old pick
    const series = appendQuote(this.series, quote, MAX_POINTS);
    if (series === this.series) return;
    this.series = series;
    this.redraw();
  },

  /** The chart's caption (page data) and its drawing; nothing while hidden. */
  redraw() {
    if (!this.visible) return;
    const series = this.series;
    const last = series[series.length - 1];
    this.draw();
    this.setData({
      chart: {
        symbol: this.data.selected,
        name: last ? last.name : '',
        points: series.length,
        from: series.length ? series[0].ts : 0,
        to: last ? last.ts : 0,
        price: last ? last.price.toFixed(2) : '',
        trend: last ? toRow(last).trend : 'flat',
      },
    });
  },

  draw() {
    if (!this.canvas) return; // not ready yet: onReady draws
    const series = this.series;
    const last = series[series.length - 1];
    drawLineChart(
      this.canvas.ctx,
      series.map((q) => q.price),
      { width: this.canvas.width, height: this.canvas.height, base: last && last.open }
    );
  },
});
