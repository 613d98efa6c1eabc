// The rollout of one flag: its stage, the gates of that stage and every transition so far.

import { apiPost } from "./api.js";
import { el, formatDuration, formatRatio, replaceRows, timeElement } from "./dom.js";
import { canChange, showToast } from "./session.js";

const RATIO_METRICS = new Set(["false_positive_rate", "block_rate", "blocked_actor_rate"]);
// Which commands make sense in which rollout state; the API rejects the others anyway.
const COMMANDS_BY_STATE = {
  none: ["start"],
  running: ["pause", "advance"],
  paused: ["resume", "advance"],
  completed: ["start"],
  rolled_back: ["start"],
  aborted: ["start"],
};

let selectedFlag = null;
let currentRollout = null;
let onChanged = () => {};

export function setRolloutChangeHandler(handler) {
  onChanged = handler;
}

export function selectedRolloutFlag() {
  return selectedFlag;
}

function formatGateValue(metric, value) {
  if (value === null || value === undefined) return "–";
  return RATIO_METRICS.has(metric) ? formatRatio(value) : String(value);
}

function formatThreshold(gate) {
  const parts = [];
  if (gate.max !== null && gate.max !== undefined) parts.push(`≤ ${formatGateValue(gate.metric, gate.max)}`);
  if (gate.min !== null && gate.min !== undefined) parts.push(`≥ ${formatGateValue(gate.metric, gate.min)}`);
  if (gate.bound) parts.push(`(${gate.bound})`);
  return parts.join(" ") || "–";
}

function gateRow(gate) {
  const status = gate.status ?? "pending";
  return el("tr", { dataset: { metric: gate.metric, status } },
    el("th", { scope: "row", text: gate.metric.replaceAll("_", " ") }),
    el("td", { class: "number", text: formatGateValue(gate.metric, gate.value) }),
    el("td", { class: "number", text: formatThreshold(gate) }),
    el("td", {}, el("span", { class: "status-pill", dataset: { status }, text: status })),
  );
}

function transitionItem(transition) {
  return el("li", { dataset: { event: transition.event } },
    timeElement(transition.at),
    el("span", { class: "event", text: transition.event.replace("_", " ") }),
    el("span", { class: "percentage", text: `${transition.percentage} %` }),
    el("span", { class: "reason", text: transition.reason || "" }),
  );
}

function summaryText(rollout) {
  const state = rollout?.state ?? "none";
  if (state === "none") return "No rollout has been started for this flag.";
  const parts = [`State: ${state.replace("_", " ")}`, `stage ${rollout.stage}`, `${rollout.percentage} %`];
  if (state === "running" && rollout.bake_left_seconds !== null && rollout.bake_left_seconds !== undefined) {
    parts.push(`bake time left ${formatDuration(rollout.bake_left_seconds)}`);
  }
  return parts.join(" · ");
}

function updateControls(state) {
  const allowed = COMMANDS_BY_STATE[state] ?? [];
  for (const button of document.querySelectorAll("[data-rollout-command]")) {
    button.hidden = !allowed.includes(button.dataset.rolloutCommand);
    button.disabled = !canChange;
  }
}

function updateFlagChoice(flagNames) {
  const select = document.getElementById("rollout-flag");
  if (!selectedFlag || !flagNames.includes(selectedFlag)) {
    selectedFlag = flagNames.includes("rate_limit_enforcement") ? "rate_limit_enforcement" : flagNames[0] ?? null;
  }
  const options = [...select.options].map((option) => option.value);
  if (options.join(",") !== flagNames.join(",")) {
    select.replaceChildren(...flagNames.map((name) => el("option", { value: name, text: name })));
  }
  select.value = selectedFlag ?? "";
}

/** Draw the rollout section for the selected flag; `rollouts` maps flag names to rollout documents. */
export function renderRollout(flagNames, rollouts) {
  updateFlagChoice(flagNames);
  const rollout = selectedFlag ? rollouts.get(selectedFlag) ?? null : null;
  currentRollout = rollout;
  const section = document.getElementById("rollout");
  section.dataset.state = rollout?.state ?? "none";
  section.dataset.stage = rollout?.stage ?? "";

  document.getElementById("rollout-summary").textContent = summaryText(rollout);
  updateControls(rollout?.state ?? "none");

  const gates = rollout?.gates ?? [];
  replaceRows(document.querySelector("#gates-table tbody"), gates.map(gateRow), "No gates: no stage is being judged.", 4);

  const failed = document.getElementById("failed-gate");
  if (rollout?.failed_gate) {
    const gate = rollout.failed_gate;
    failed.textContent = `Failed gate: ${gate.metric} was ${formatGateValue(gate.metric, gate.value)}, allowed ${formatThreshold(gate)}.`;
    failed.hidden = false;
  } else {
    failed.hidden = true;
  }

  const transitions = [...(rollout?.transitions ?? [])].reverse();
  const timeline = document.getElementById("timeline");
  timeline.replaceChildren(...transitions.map(transitionItem));
  if (transitions.length === 0) timeline.append(el("li", { class: "empty", text: "No transitions yet." }));
}

async function runCommand(command) {
  if (!selectedFlag) return;
  const path = `/v1/rollouts/${encodeURIComponent(selectedFlag)}/${command}`;
  try {
    await apiPost(path, command === "start" ? {} : { reason: `${command} from the console` });
    showToast(`Rollout of ${selectedFlag}: ${command} done`);
  } catch (error) {
    showToast(`Rollout ${command} of ${selectedFlag} failed: ${error.message}`, "error");
  }
  await onChanged();
}

/** Wire the flag selector and the command buttons; `redraw` draws the section again from cached data. */
export function setUpRollout(redraw) {
  document.getElementById("rollout-flag").addEventListener("change", (event) => {
    selectedFlag = event.target.value;
    redraw();
  });
  for (const button of document.querySelectorAll("[data-rollout-command]")) {
    button.addEventListener("click", () => runCommand(button.dataset.rolloutCommand));
  }
}

export function currentRolloutState() {
  return currentRollout?.state ?? "none";
}
