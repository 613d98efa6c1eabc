// Line charts drawn as inline SVG: one point per minute, with an optional threshold line.

import { el, svg } from "./dom.js";

const WIDTH = 640;
const HEIGHT = 240;
const MARGIN = { top: 14, right: 14, bottom: 30, left: 56 };
const PLOT_WIDTH = WIDTH - MARGIN.left - MARGIN.right;
const PLOT_HEIGHT = HEIGHT - MARGIN.top - MARGIN.bottom;
const MINUTE_MS = 60_000;

const PALETTE = ["#1f77b4", "#e8590c", "#2f9e44", "#c92a2a", "#7048e8", "#8c564b", "#d6336c", "#495057", "#a9a21b", "#1098ad"];

const minuteFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });

/** Return the start times (ms) of the `count` minutes that end with the current one. */
export function minuteAxis(nowMs, count = 60) {
  const last = Math.floor(nowMs / MINUTE_MS) * MINUTE_MS;
  return Array.from({ length: count }, (_, index) => last - (count - 1 - index) * MINUTE_MS);
}

/** Give each name a palette colour by its position in the sorted list, so colours stay put between refreshes. */
export function colorsFor(names) {
  const colors = new Map();
  [...names].sort().forEach((name, index) => colors.set(name, PALETTE[index % PALETTE.length]));
  return colors;
}

/** Round `value` up to 1, 2, 2.5 or 5 times a power of ten, so axis ticks are readable. */
export function niceCeiling(value) {
  if (!(value > 0)) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (step * magnitude >= value) return step * magnitude;
  }
  return 10 * magnitude;
}

function xFor(index, count) {
  return MARGIN.left + (count <= 1 ? 0 : (index / (count - 1)) * PLOT_WIDTH);
}

function yFor(value, yMax) {
  return MARGIN.top + PLOT_HEIGHT - (Math.min(value, yMax) / yMax) * PLOT_HEIGHT;
}

/** Build an SVG path through the points, broken where a value is null (no data for that minute). */
function linePath(values, yMax) {
  let path = "";
  let drawing = false;
  values.forEach((value, index) => {
    if (value === null || value === undefined) {
      drawing = false;
      return;
    }
    const command = drawing ? "L" : "M";
    path += `${command}${xFor(index, values.length).toFixed(1)},${yFor(value, yMax).toFixed(1)} `;
    drawing = true;
  });
  return path.trim();
}

const hasValue = (value) => value !== null && value !== undefined;

/**
 * Dots where a line alone would show nothing or hide the present: points
 * without a neighbour (a path needs two) and the latest point.
 */
function pointMarks(line, yMax) {
  const values = line.values;
  const marks = [];
  values.forEach((value, index) => {
    if (!hasValue(value)) return;
    const isolated = !hasValue(values[index - 1]) && !hasValue(values[index + 1]);
    if (isolated || index === values.length - 1) {
      marks.push(svg("circle", {
        cx: xFor(index, values.length).toFixed(1), cy: yFor(value, yMax).toFixed(1), r: 3.5, fill: line.color, class: "point",
      }));
    }
  });
  return marks;
}

function drawGrid(axis, yMax, formatValue) {
  const group = svg("g", { class: "grid" });
  const ticks = 4;
  for (let step = 0; step <= ticks; step += 1) {
    const value = (yMax * step) / ticks;
    const y = yFor(value, yMax);
    group.append(
      svg("line", { x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: y, y2: y, class: step === 0 ? "axis" : "gridline" }),
      svg("text", { x: MARGIN.left - 6, y: y + 4, "text-anchor": "end", class: "tick", text: formatValue(value) }),
    );
  }
  const last = axis.length - 1;
  for (const index of [0, 15, 30, 45, last]) {
    if (index > last) continue;
    const x = xFor(index, axis.length);
    // The first and last labels hang inwards so that neither is cut at the edge.
    let anchor = "middle";
    if (index === 0) anchor = "start";
    if (index === last) anchor = "end";
    group.append(
      svg("line", { x1: x, x2: x, y1: MARGIN.top + PLOT_HEIGHT, y2: MARGIN.top + PLOT_HEIGHT + 4, class: "axis" }),
      svg("text", { x, y: HEIGHT - 8, "text-anchor": anchor, class: "tick", text: minuteFormat.format(new Date(axis[index])) }),
    );
  }
  return group;
}

/** Transparent columns, one per minute, whose tooltips list the values of that minute. */
function drawHoverColumns(axis, series, formatValue) {
  const group = svg("g", { class: "hover-columns" });
  const columnWidth = PLOT_WIDTH / Math.max(1, axis.length - 1);
  axis.forEach((minute, index) => {
    const lines = series
      .filter((line) => line.values[index] !== null && line.values[index] !== undefined)
      .map((line) => `${line.name}: ${formatValue(line.values[index])}`);
    const label = `${minuteFormat.format(new Date(minute))}\n${lines.join("\n") || "no data"}`;
    group.append(
      svg("rect", {
        x: xFor(index, axis.length) - columnWidth / 2, y: MARGIN.top, width: columnWidth, height: PLOT_HEIGHT,
      }, svg("title", { text: label })),
    );
  });
  return group;
}

/**
 * Draw a line chart into `figure`'s `.chart-canvas` and fill its legend.
 *
 * `series` is `[{name, color, values, dashed?}]` with one value per axis
 * minute (null for a gap); `threshold` is `{value, label}` or null;
 * `formatValue` formats tooltips and `formatTick` the y axis; `summary`
 * becomes the chart's accessible name.
 */
export function drawLineChart(figure, { axis, series, threshold = null, formatValue = String, formatTick = formatValue, minMax = 1, summary }) {
  const highest = Math.max(minMax, threshold?.value ?? 0, ...series.flatMap((line) => line.values.filter((v) => v !== null)));
  const yMax = niceCeiling(highest * 1.05);
  const titleId = `${figure.id}-title`;

  const chart = svg("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-labelledby": titleId, class: "chart-svg",
  }, svg("title", { id: titleId, text: summary }));
  chart.append(drawGrid(axis, yMax, formatTick));

  if (threshold && threshold.value !== null && threshold.value !== undefined) {
    const y = yFor(threshold.value, yMax);
    chart.append(
      svg("line", { x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: y, y2: y, class: "threshold" }),
      svg("text", { x: WIDTH - MARGIN.right - 4, y: y - 5, "text-anchor": "end", class: "threshold-label", text: threshold.label }),
    );
  }

  for (const line of series) {
    chart.append(svg("path", {
      d: linePath(line.values, yMax), stroke: line.color, class: line.dashed ? "series dashed" : "series",
    }));
    chart.append(...pointMarks(line, yMax));
  }
  if (series.every((line) => line.values.every((value) => !value))) {
    chart.append(svg("text", {
      x: MARGIN.left + PLOT_WIDTH / 2, y: MARGIN.top + PLOT_HEIGHT / 2, "text-anchor": "middle", class: "empty-label",
      text: "No decisions in the last hour",
    }));
  }
  chart.append(drawHoverColumns(axis, series, formatValue));

  figure.querySelector(".chart-canvas").replaceChildren(chart);
  figure.querySelector(".legend").replaceChildren(...series.map((line) => el("li", {},
    el("span", { class: line.dashed ? "swatch dashed" : "swatch", "data-color": line.color }),
    line.name,
  )));
  // CSP forbids inline style markup; colours set through the CSSOM are allowed.
  for (const swatch of figure.querySelectorAll(".swatch")) swatch.style.setProperty("--swatch", swatch.dataset.color);
}
