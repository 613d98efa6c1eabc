// Read-only tables: top blocked actors, recent blocks and the configuration-change history.

import { apiGet } from "./api.js";
import { actorName, el, formatRatio, replaceRows, timeElement } from "./dom.js";

function topBlockedRow(item) {
  return el("tr", {},
    el("td", { class: "mono", text: actorName(item) }),
    el("td", { text: item.action }),
    el("td", { class: "number", text: String(item.blocked) }),
    el("td", { class: "number", text: String(item.allowed) }),
    el("td", { class: "number", text: formatRatio(item.block_rate) }),
  );
}

function recentRow(item) {
  return el("tr", {},
    el("td", {}, timeElement(item.at)),
    el("td", { class: "mono", text: actorName(item) }),
    el("td", { text: item.action }),
    el("td", { text: item.tier ?? "–" }),
    el("td", { class: "mono", text: item.policy ?? "–" }),
    el("td", { text: item.reason ?? "–", title: item.request_id ? `request ${item.request_id}` : null }),
  );
}

export async function refreshBlocks() {
  const [top, recent] = await Promise.all([
    apiGet("/v1/reports/top-blocked?since=1h&limit=10"),
    apiGet("/v1/reports/recent?since=1h&limit=15"),
  ]);
  replaceRows(document.querySelector("#top-blocked-table tbody"), top.map(topBlockedRow), "No blocks in the last hour.", 5);
  replaceRows(document.querySelector("#recent-table tbody"), recent.map(recentRow), "No blocks in the last hour.", 6);
}

function formatValue(value) {
  if (value === null || value === undefined) return "none";
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

/** Describe a change as "field: before → after" for each field that differs. */
export function describeChange(before, after) {
  if (!before && after) return [`created: ${formatValue(after)}`];
  if (before && !after) return [`deleted: ${formatValue(before)}`];
  if (typeof before !== "object" || typeof after !== "object") return [`${formatValue(before)} → ${formatValue(after)}`];
  const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])].sort();
  const lines = keys
    .filter((key) => JSON.stringify(before[key]) !== JSON.stringify(after[key]))
    .map((key) => `${key}: ${formatValue(before[key])} → ${formatValue(after[key])}`);
  return lines.length ? lines : ["no field changed"];
}

function changeRow(change) {
  return el("tr", {},
    el("td", {}, timeElement(change.at)),
    el("td", { text: change.changed_by ?? "–" }),
    el("td", { text: change.via ?? "–" }),
    el("td", {}, el("span", { class: "entity", text: change.entity }), " ", el("span", { class: "mono", text: change.key ?? "" })),
    el("td", {}, el("ul", { class: "change-lines" }, ...describeChange(change.before, change.after).map((line) => el("li", { text: line })))),
  );
}

export async function refreshChanges() {
  const changes = await apiGet("/v1/changes?limit=50");
  replaceRows(document.querySelector("#changes-table tbody"), changes.map(changeRow), "No configuration changes yet.", 5);
}
