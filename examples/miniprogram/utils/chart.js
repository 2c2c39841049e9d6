// A small line chart for the mini-program canvas, and the price series behind it.
//
// drawLineChart() is pure: it draws on whatever context it is given and reads nothing
// else, so it works with a type="2d" canvas context (what the quotes page uses), with the
// older wx.createCanvasContext() (paints on draw()), and with a recording fake in tests. No chart plugin: the classic demo
// needed wxcharts.js for what is a few lines of canvas calls.

// A-share convention: red is up, green is down.
const UP_COLOR = '#e64340';
const DOWN_COLOR = '#09bb07';
const GRID_COLOR = '#cccccc';
const LABEL_COLOR = '#888888';

/**
 * Sets a style on either kind of context: CanvasContext has setters
 * (setStrokeStyle(...)), the 2D context has properties (strokeStyle = ...).
 */
function setStyle(ctx, prop, value) {
  const setter = 'set' + prop.charAt(0).toUpperCase() + prop.slice(1);
  if (typeof ctx[setter] === 'function') ctx[setter](value);
  else ctx[prop] = value;
}

function setFontSize(ctx, px) {
  if (typeof ctx.setFontSize === 'function') ctx.setFontSize(px);
  else ctx.font = px + 'px sans-serif';
}

/**
 * Draws `prices` (oldest first) as a line across a width x height canvas, with a dashed
 * baseline at `base` (the open) when given, and the top and bottom of the range as
 * labels. The line is red when the last price is at or above the base, green below.
 * Returns the scale used ({ min, max }) or null when there was nothing to draw.
 */
function drawLineChart(ctx, prices, options) {
  const width = options.width;
  const height = options.height;
  const pad = options.padding === undefined ? 20 : options.padding;
  const base = options.base;
  ctx.clearRect(0, 0, width, height);
  if (!prices.length) {
    if (typeof ctx.draw === 'function') ctx.draw();
    return null;
  }

  let min = Math.min.apply(null, prices);
  let max = Math.max.apply(null, prices);
  if (base !== undefined) {
    min = Math.min(min, base);
    max = Math.max(max, base);
  }
  if (max - min < 0.02) {
    // A flat series would divide by zero: give it a band of a cent either side.
    min -= 0.01;
    max += 0.01;
  }
  const step = prices.length > 1 ? (width - 2 * pad) / (prices.length - 1) : 0;
  const x = (i) => pad + i * step;
  const y = (price) => pad + ((max - price) * (height - 2 * pad)) / (max - min);

  if (base !== undefined) {
    setStyle(ctx, 'strokeStyle', GRID_COLOR);
    setStyle(ctx, 'lineWidth', 1);
    if (typeof ctx.setLineDash === 'function') ctx.setLineDash([4, 4]);
    ctx.beginPath();
    ctx.moveTo(pad, y(base));
    ctx.lineTo(width - pad, y(base));
    ctx.stroke();
    if (typeof ctx.setLineDash === 'function') ctx.setLineDash([]);
  }

  const last = prices[prices.length - 1];
  setStyle(ctx, 'strokeStyle', base !== undefined && last < base ? DOWN_COLOR : UP_COLOR);
  setStyle(ctx, 'lineWidth', 2);
  ctx.beginPath();
  ctx.moveTo(x(0), y(prices[0]));
  for (let i = 1; i < prices.length; i++) ctx.lineTo(x(i), y(prices[i]));
  ctx.stroke();

  setStyle(ctx, 'fillStyle', LABEL_COLOR);
  setFontSize(ctx, 10);
  ctx.fillText(max.toFixed(2), 2, pad - 6);
  ctx.fillText(min.toFixed(2), 2, height - pad + 14);

  if (typeof ctx.draw === 'function') ctx.draw();
  return { min, max };
}

/**
 * The series after a `history` reply: the history, then the live quotes that are newer
 * than its last one (a quote can arrive before the history reply, or be in both), keeping
 * the newest `max`.
 */
function mergeHistory(history, live, max) {
  const newest = history.length ? history[history.length - 1].ts : -Infinity;
  return history.concat(live.filter((q) => q.ts > newest)).slice(-max);
}

/** The series with one live quote added, unless it is not newer than the last point. */
function appendQuote(series, quote, max) {
  const last = series[series.length - 1];
  if (last && quote.ts <= last.ts) return series;
  return series.concat([quote]).slice(-max);
}

module.exports = { drawLineChart, mergeHistory, appendQuote, UP_COLOR, DOWN_COLOR };
