// One card per flag: enabled state, percentage, per-action percentages, stage, bake time and rollback.

import { ApiError, apiGet, apiPatch, apiPost } from "./api.js";
import { el, formatDuration, hiddenText, isEditing, trackDirty } from "./dom.js";
import { changeControl, setFieldError, showToast } from "./session.js";

const ACTIVE_ROLLOUT_STATES = new Set(["running", "paused"]);
const cards = new Map();
let onChanged = () => {};

/** Register the function that reloads the page's data after a change made on a card. */
export function setFlagChangeHandler(handler) {
  onChanged = handler;
}

const slug = (name) => name.replace(/[^a-zA-Z0-9_-]/g, "-");

function actionsOf(flag) {
  const actions = new Set(flag.config?.actions ?? []);
  for (const action of Object.keys(flag.action_percentages ?? {})) actions.add(action);
  return [...actions].sort();
}

function fact(label, field) {
  return el("div", {}, el("dt", { text: label }), el("dd", { "data-field": field, text: "–" }));
}

function buildEnabledSwitch(flag) {
  const input = changeControl(el("input", { type: "checkbox", role: "switch", id: `enabled-${slug(flag.name)}` }));
  input.addEventListener("change", async () => {
    // A refresh that lands while the change is in flight must not flip the switch back.
    input.setAttribute("data-saving", "");
    try {
      await saveFlag(flag.name, { enabled: input.checked }, null, input);
    } finally {
      input.removeAttribute("data-saving");
    }
  });
  return el("p", { class: "switch" }, input, el("label", { for: input.id }, "Enabled", hiddenText(` ${flag.name}`)));
}

function buildPercentageForm(flag) {
  const id = `percentage-${slug(flag.name)}`;
  const number = changeControl(el("input", { type: "number", id, min: 0, max: 100, step: 1, inputmode: "numeric" }));
  const range = changeControl(el("input", {
    type: "range", min: 0, max: 100, step: 1, "aria-label": `Percentage slider of ${flag.name}`, tabindex: -1,
  }));
  range.addEventListener("input", () => { number.value = range.value; number.setAttribute("data-dirty", ""); });
  number.addEventListener("input", () => { range.value = number.value; });
  trackDirty(number);

  const form = el("form", { class: "percentage-form", novalidate: true },
    el("label", { for: id }, "Percentage", hiddenText(` of ${flag.name}`)),
    el("div", { class: "percentage-inputs" }, range, number, el("span", { "aria-hidden": "true", text: "%" })),
    changeControl(el("button", { type: "submit" }, "Set percentage", hiddenText(` of ${flag.name}`))),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    saveFlag(flag.name, { percentage: parseInteger(number.value) }, { percentage: number }, number);
  });
  return form;
}

function buildActionPercentages(flag) {
  const fields = el("div", { class: "action-fields" });
  const form = el("form", { class: "action-percentages-form", novalidate: true },
    el("p", { class: "hint", text: "An empty field follows the flag's percentage. Emergency rollback clears every per-action percentage." }),
    fields,
    changeControl(el("button", { type: "submit" }, "Save per-action percentages", hiddenText(` of ${flag.name}`))),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const flag = form.closest(".flag-card").flag;
    const percentages = {};
    const inputs = {};
    for (const input of fields.querySelectorAll("input")) {
      const action = input.dataset.action;
      inputs[`action_percentages.${action}`] = input;
      inputs[`config.action_percentages.${action}`] = input;
      if (input.value.trim() !== "") {
        percentages[action] = parseInteger(input.value);
      } else if (flag?.action_percentages?.[action] !== undefined) {
        // An emptied field removes the override, so the action follows the flag's percentage.
        percentages[action] = null;
      }
    }
    saveFlag(flag.name, { action_percentages: percentages }, inputs, fields);
  });
  return el("details", { class: "action-percentages" }, el("summary", { text: "Per-action percentages" }), form);
}

function renderActionFields(card, flag) {
  const fields = card.querySelector(".action-fields");
  const actions = actionsOf(flag);
  const known = [...fields.querySelectorAll("input")].map((input) => input.dataset.action);
  if (known.join(",") !== actions.join(",")) {
    fields.replaceChildren(...actions.map((action) => {
      const id = `action-percentage-${slug(flag.name)}-${slug(action)}`;
      const input = changeControl(el("input", {
        type: "number", id, min: 0, max: 100, step: 1, inputmode: "numeric", placeholder: "flag %", dataset: { action },
      }));
      trackDirty(input);
      return el("p", { class: "action-field" },
        el("label", { for: id }, action, hiddenText(` percentage of ${flag.name}`)), input);
    }));
    if (actions.length === 0) {
      fields.append(el("p", { class: "hint", text: "This flag governs every action and has no per-action percentages." }));
    }
  }
  if (isEditing(fields)) return;
  for (const input of fields.querySelectorAll("input")) {
    const value = flag.action_percentages?.[input.dataset.action];
    input.value = value === undefined ? "" : String(value);
  }
}

function buildCard(flag) {
  const headingId = `flag-${slug(flag.name)}-heading`;
  const rollback = changeControl(el("button", { type: "button", class: "danger" },
    "Emergency rollback", hiddenText(` of ${flag.name}`)));
  rollback.addEventListener("click", () => confirmRollback(flag.name));

  const card = el("article", { class: "flag-card", "aria-labelledby": headingId, dataset: { flag: flag.name } },
    el("header", {},
      el("h3", { id: headingId, text: flag.name }),
      el("span", { class: "state-pill", "data-field": "state" }),
    ),
    el("dl", { class: "facts" },
      fact("Enforced for", "percentage"),
      fact("Rollout", "rollout-state"),
      fact("Stage", "stage"),
      fact("Bake time left", "bake-left"),
    ),
    buildEnabledSwitch(flag),
    buildPercentageForm(flag),
    buildActionPercentages(flag),
    el("p", { class: "rollback" }, rollback),
  );
  return card;
}

function setField(card, field, text) {
  card.querySelector(`[data-field="${field}"]`).textContent = text;
}

function updateCard(card, flag, rollout) {
  const pill = card.querySelector('[data-field="state"]');
  pill.textContent = flag.enabled ? "Enabled" : "Disabled";
  pill.dataset.state = flag.enabled ? "on" : "off";
  card.dataset.enabled = String(flag.enabled);
  card.dataset.percentage = String(flag.percentage);

  const overrides = Object.entries(flag.action_percentages ?? {}).map(([action, value]) => `${action} ${value} %`);
  const enforced = flag.enabled ? `${flag.percentage} % of actors` : "nobody (disabled)";
  setField(card, "percentage", overrides.length && flag.enabled ? `${enforced}; ${overrides.join(", ")}` : enforced);

  const state = rollout?.state ?? "none";
  setField(card, "rollout-state", state === "none" ? "no rollout" : state.replace("_", " "));
  setField(card, "stage", rollout && state !== "none" ? `${rollout.stage} · ${rollout.percentage} %` : "–");
  const bake = card.querySelector('[data-field="bake-left"]');
  if (state === "running" && rollout.bake_left_seconds !== null && rollout.bake_left_seconds !== undefined) {
    bake.dataset.deadline = String(Date.now() + rollout.bake_left_seconds * 1000);
    bake.textContent = formatDuration(rollout.bake_left_seconds);
  } else {
    delete bake.dataset.deadline;
    bake.textContent = state === "paused" ? "paused" : "–";
  }

  const enabled = card.querySelector('input[role="switch"]');
  if (!enabled.hasAttribute("data-saving")) enabled.checked = flag.enabled;
  const form = card.querySelector(".percentage-form");
  if (!isEditing(form)) {
    form.querySelector('input[type="number"]').value = String(flag.percentage);
    form.querySelector('input[type="range"]').value = String(flag.percentage);
  }
  renderActionFields(card, flag);
}

/** Draw or update the card of each flag; `rollouts` maps a flag name to its rollout document. */
export function renderFlags(flags, rollouts) {
  const list = document.getElementById("flag-list");
  const names = new Set(flags.map((flag) => flag.name));
  for (const [name, card] of cards) {
    if (!names.has(name)) {
      card.remove();
      cards.delete(name);
    }
  }
  for (const flag of flags) {
    if (!cards.has(flag.name)) {
      const card = buildCard(flag);
      cards.set(flag.name, card);
      list.append(card);
    }
    const card = cards.get(flag.name);
    card.flag = flag;
    card.rollout = rollouts.get(flag.name) ?? null;
    updateCard(card, flag, card.rollout);
  }
  if (flags.length === 0) list.replaceChildren(el("p", { class: "hint", text: "No flags. Run rampgate migrate to seed the defaults." }));
}

/** Count the bake time down between refreshes. */
export function tickBakeClocks() {
  for (const bake of document.querySelectorAll('[data-field="bake-left"][data-deadline]')) {
    bake.textContent = formatDuration((Number(bake.dataset.deadline) - Date.now()) / 1000);
  }
}

/** Parse an integer field; text that is not an integer goes to the API as typed so its message names it. */
export function parseInteger(text) {
  const trimmed = String(text).trim();
  if (trimmed === "") return null;
  return /^-?\d+$/.test(trimmed) ? Number(trimmed) : trimmed;
}

function clearErrors(scope) {
  for (const input of scope.querySelectorAll('[aria-invalid="true"]')) setFieldError(input, null);
}

/**
 * PATCH the flag. On a validation error the message goes next to the field
 * the API names (looked up in `fieldInputs`), or next to `fallback`.
 */
async function saveFlag(name, change, fieldInputs, fallback) {
  const card = cards.get(name);
  clearErrors(card);
  try {
    const flag = await apiPatch(`/v1/flags/${encodeURIComponent(name)}`, change);
    for (const input of card.querySelectorAll("[data-dirty]")) input.removeAttribute("data-dirty");
    showToast(describeFlag(flag ?? { name, ...change }));
    await onChanged();
  } catch (error) {
    const input = (error instanceof ApiError && fieldInputs?.[error.field]) || fallback;
    if (input instanceof HTMLInputElement) setFieldError(input, error.message);
    showToast(`${name}: ${error.message}`, "error");
    if (fallback instanceof HTMLInputElement && fallback.type === "checkbox") fallback.checked = !fallback.checked;
  }
}

function describeFlag(flag) {
  if (flag.enabled === false) return `${flag.name} is disabled (${flag.percentage ?? 0} %)`;
  return `${flag.name}: enabled at ${flag.percentage} %`;
}

function confirmRollback(name) {
  const dialog = document.getElementById("rollback-dialog");
  dialog.querySelector("[data-flag-name]").textContent = name;
  dialog.returnValue = "";
  dialog.onclose = () => {
    if (dialog.returnValue === "confirm") rollBack(name);
  };
  dialog.showModal();
}

/**
 * Stop enforcement of the flag now. A running or paused rollout is aborted,
 * which disables the flag and records the abort in its timeline; the flag
 * rollback then clears whatever the abort left (per-action percentages, or a
 * flag that a race re-enabled).
 */
export async function rollBack(name) {
  const card = cards.get(name);
  const path = encodeURIComponent(name);
  try {
    if (card?.rollout && ACTIVE_ROLLOUT_STATES.has(card.rollout.state)) {
      try {
        await apiPost(`/v1/rollouts/${path}/abort`, { reason: "emergency rollback from the console" });
      } catch (error) {
        // The controller may have finished or rolled back on its own a moment ago.
        if (!(error instanceof ApiError) || error.status === 403) throw error;
      }
      const flag = await apiGet(`/v1/flags/${path}`);
      if (flag.enabled || flag.percentage > 0 || Object.keys(flag.action_percentages ?? {}).length > 0) {
        await apiPost(`/v1/flags/${path}/rollback`);
      }
    } else {
      await apiPost(`/v1/flags/${path}/rollback`);
    }
    showToast(`${name} rolled back: enforcement is off`);
  } catch (error) {
    showToast(`Rollback of ${name} failed: ${error.message}`, "error");
  }
  await onChanged();
}
