// Quotes: every symbol's live price, and a line chart of the one picked.
//
// The board comes from the `stock` group (one `tick` with every quote, per tick). The
// chart comes from `history` (the past) and then the `stock.<SYMBOL>` group (one `quote`
// per tick). Both groups send their latest state on subscribing, so the page has
// something to show at once, and the hub module renews them after a reconnect.
const { drawLineChart, mergeHistory, appendQuote } = require('../../utils/chart.js');

const CANVAS_ID = 'stockChart';
const SYMBOL_KEY = 'stock.symbol'; // storage key of the symbol last picked
const MAX_POINTS = 300; // the hub keeps 300 quotes per symbol by default
const CHART_HEIGHT = 200;

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

function chartWidth() {
  // getWindowInfo replaced getSystemInfoSync in base library 2.20.1.
  const info = wx.getWindowInfo ? wx.getWindowInfo() : wx.getSystemInfoSync();
  return info.windowWidth || 320;
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
    this.setData({ chartWidth: chartWidth(), online: this.hub.isOpen() });
    this.offs = [
      this.hub.on('state', (e) => this.setData({ online: e.state === 'open' })),
      this.hub.on('tick', (t) => this.onTick(t)),
      this.hub.on('quote', (e) => this.onQuote(e.quote)),
      // After a reconnect the chart may have a gap, or the hub may have restarted with a
      // new market: fetch the history again.
      this.hub.on('ready', () => this.loadHistory()),
    ];
    this.wanted = (query && query.symbol) || wx.getStorageSync(SYMBOL_KEY) || '';
    this.hub.subscribe('stock').catch((err) => this.showError(err));
  },

  onUnload() {
    this.offs.forEach((off) => off());
    this.hub.unsubscribe('stock').catch(() => {});
    if (this.data.selected) this.hub.unsubscribe('stock.' + this.data.selected).catch(() => {});
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
    if (previous) this.hub.unsubscribe('stock.' + previous).catch(() => {});
    this.series = [];
    this.setData({ selected: symbol });
    this.redraw();
    // The subscription sends the latest quote at once; the history fills in behind it.
    this.hub.subscribe('stock.' + symbol).catch((err) => this.showError(err));
    this.loadHistory();
  },

  loadHistory() {
    const symbol = this.data.selected;
    if (!symbol) return;
    this.hub
      .history(symbol, MAX_POINTS)
      .then((reply) => {
        if (reply.symbol !== this.data.selected) return; // picked another meanwhile
        this.series = mergeHistory(reply.quotes, this.series, MAX_POINTS);
        this.redraw();
      })
      .catch((err) => this.showError(err));
  },

  onQuote(quote) {
    if (quote.symbol !== this.data.selected) return; // a late one for the old pick
    const series = appendQuote(this.series, quote, MAX_POINTS);
    if (series === this.series) return;
    this.series = series;
    this.redraw();
  },

  redraw() {
    const series = this.series;
    const last = series[series.length - 1];
    const ctx = wx.createCanvasContext(CANVAS_ID, this);
    drawLineChart(
      ctx,
      series.map((q) => q.price),
      { width: this.data.chartWidth, height: this.data.chartHeight, base: last && last.open }
    );
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

  showError(err) {
    if (err.code === 'disconnected') return; // renewed after the reconnect
    wx.showToast({ title: err.message, icon: 'none' });
  },
});
