// The traffic charts: decisions and 429s per minute by action, and the block rate against its gate.

import { apiGet } from "./api.js";
import { colorsFor, drawLineChart, minuteAxis } from "./charts.js";
import { formatRatio } from "./dom.js";

const THRESHOLD_COLOR = "#c92a2a";
const RATE_COLOR = "#1f77b4";

/** Sum the rows of `/v1/reports/timeseries` into per-action and total counts for each axis minute. */
export function countsByMinute(rows, axis) {
  const index = new Map(axis.map((minute, position) => [minute, position]));
  const decisions = new Map();
  const blocked = new Map();
  const totalDecisions = axis.map(() => 0);
  const totalBlocked = axis.map(() => 0);

  for (const row of rows) {
    const minute = Math.floor(Date.parse(row.minute) / 60_000) * 60_000;
    const position = index.get(minute);
    if (position === undefined) continue;
    if (!decisions.has(row.action)) {
      decisions.set(row.action, axis.map(() => 0));
      blocked.set(row.action, axis.map(() => 0));
    }
    decisions.get(row.action)[position] += row.decisions;
    blocked.get(row.action)[position] += row.blocked;
    totalDecisions[position] += row.decisions;
    totalBlocked[position] += row.blocked;
  }
  return { decisions, blocked, totalDecisions, totalBlocked };
}

const sum = (values) => values.reduce((total, value) => total + value, 0);
const count = (value) => String(Math.round(value));

function seriesFrom(byAction, colors) {
  return [...byAction.keys()].sort().map((action) => ({
    name: action, color: colors.get(action), values: byAction.get(action),
  }));
}

/** Expose the numbers behind a chart as data attributes, for scripts and tests that read the page. */
function setChartData(figure, totals, latest, axis) {
  figure.dataset.total = String(totals);
  figure.dataset.latest = String(latest);
  figure.dataset.latestMinute = new Date(axis[axis.length - 1]).toISOString();
}

function drawCountChart(figure, { axis, byAction, totals, colors, noun }) {
  const total = sum(totals);
  const latest = totals[totals.length - 1];
  drawLineChart(figure, {
    axis,
    series: seriesFrom(byAction, colors),
    formatValue: count,
    minMax: 4,
    summary: `${noun} per minute by action over the last hour: ${total} in total, ${latest} in the latest minute.`,
  });
  setChartData(figure, total, latest, axis);
}

function drawBlockRateChart(figure, { axis, counts, threshold }) {
  const rates = axis.map((_, position) => {
    const decisions = counts.totalDecisions[position];
    return decisions > 0 ? counts.totalBlocked[position] / decisions : null;
  });
  const allDecisions = sum(counts.totalDecisions);
  const overall = allDecisions > 0 ? sum(counts.totalBlocked) / allDecisions : null;
  const latest = rates[rates.length - 1];
  const series = [{ name: "block rate", color: RATE_COLOR, values: rates }];
  if (threshold !== null && threshold !== undefined) {
    series.push({ name: `gate max ${formatRatio(threshold)}`, color: THRESHOLD_COLOR, values: [], dashed: true });
  }

  drawLineChart(figure, {
    axis,
    series,
    threshold: threshold === null || threshold === undefined ? null : { value: threshold, label: `gate max ${formatRatio(threshold)}` },
    formatValue: formatRatio,
    formatTick: (value) => `${(value * 100).toFixed(value !== 0 && value < 0.1 ? 1 : 0)} %`,
    minMax: 0.01,
    summary: `Block rate per minute over the last hour: ${formatRatio(overall)} overall`
      + (threshold === null || threshold === undefined ? ", no block-rate gate." : `, gate maximum ${formatRatio(threshold)}.`),
  });
  figure.dataset.threshold = threshold === null || threshold === undefined ? "" : String(threshold);
  figure.dataset.overall = overall === null ? "" : String(overall);
  figure.dataset.latest = latest === null ? "" : String(latest);
  figure.dataset.latestMinute = new Date(axis[axis.length - 1]).toISOString();
}

/** Fetch the last hour of per-minute counts and redraw the three charts. */
export async function refreshTraffic() {
  const report = await apiGet("/v1/reports/timeseries?since=1h");
  const rows = report?.minutes ?? [];
  const newest = rows.reduce((latest, row) => Math.max(latest, Date.parse(row.minute) || 0), 0);
  // The axis ends at the browser's current minute, or later when the server's clock is ahead.
  const axis = minuteAxis(Math.max(Date.now(), newest));
  const counts = countsByMinute(rows, axis);
  const colors = colorsFor(new Set(rows.map((row) => row.action)));

  drawCountChart(document.getElementById("chart-decisions"), {
    axis, byAction: counts.decisions, totals: counts.totalDecisions, colors, noun: "Decisions",
  });
  drawCountChart(document.getElementById("chart-blocked"), {
    axis, byAction: counts.blocked, totals: counts.totalBlocked, colors, noun: "429s",
  });
  drawBlockRateChart(document.getElementById("chart-block-rate"), {
    axis, counts, threshold: report?.block_rate_max ?? null,
  });
}
