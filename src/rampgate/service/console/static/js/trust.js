// Trust overrides: add, edit and remove the trust profile of an actor.

import { ApiError, apiDelete, apiGet, apiPut } from "./api.js";
import { actorName, el, hiddenText, isEditing, trackDirty } from "./dom.js";
import { changeControl, setFieldError, showToast } from "./session.js";

const TIERS = ["A", "B", "C", "D"];
const LEVELS = ["E0", "E1", "E2", "E3", "E4", "E5"];

const rows = new Map();
let onChanged = () => {};

export function setTrustChangeHandler(handler) {
  onChanged = handler;
}

const slug = (text) => text.replace(/[^a-zA-Z0-9_-]/g, "-");

/** Parse the score field: empty means "leave unset", text that is not a number goes to the API as typed. */
function parseScore(text) {
  const trimmed = String(text).trim();
  if (trimmed === "") return null;
  const value = Number(trimmed);
  return Number.isFinite(value) ? value : trimmed;
}

const COLUMN_NAMES = { tier: "Tier", enforcement_level: "Level", trust_score: "Score" };

function control(name, label, node) {
  node.id = `trust-${slug(label)}`;
  node.dataset.name = name;
  node.setAttribute("aria-label", label);
  changeControl(node);
  trackDirty(node);
  return el("td", { "data-label": COLUMN_NAMES[name] }, node);
}

function options(values) {
  return values.map((value) => el("option", { value, text: value }));
}

function buildRow(profile) {
  const actor = actorName(profile);
  const save = changeControl(el("button", { type: "button", class: "primary" }, "Save", hiddenText(` ${actor}`)));
  const remove = changeControl(el("button", { type: "button" }, "Remove", hiddenText(` ${actor}`)));
  const row = el("tr", { dataset: { actor } },
    el("th", { scope: "row", class: "mono", text: actor }),
    control("tier", `Tier of ${actor}`, el("select", {}, ...options(TIERS))),
    control("enforcement_level", `Enforcement level of ${actor}`, el("select", {}, ...options(LEVELS))),
    control("trust_score", `Trust score of ${actor}`, el("input", { type: "number", step: "0.1", inputmode: "decimal", class: "narrow" })),
    el("td", { class: "row-actions" }, save, remove, el("span", { class: "row-status", role: "status" })),
  );
  save.addEventListener("click", () => saveRow(row));
  remove.addEventListener("click", () => removeRow(row));
  return row;
}

const field = (row, name) => row.querySelector(`[data-name="${name}"]`);

function fillRow(row, profile) {
  row.profile = profile;
  field(row, "tier").value = profile.tier;
  field(row, "enforcement_level").value = profile.enforcement_level;
  field(row, "trust_score").value = profile.trust_score === null || profile.trust_score === undefined ? "" : String(profile.trust_score);
}

function showError(scope, error, lookup) {
  const target = error instanceof ApiError ? lookup(error.field) : null;
  if (target instanceof HTMLElement) setFieldError(target, error.message);
  showToast(`Not saved: ${error.message}`, "error");
  return target instanceof HTMLElement;
}

function clearErrors(scope) {
  for (const node of scope.querySelectorAll('[aria-invalid="true"]')) setFieldError(node, null);
}

async function saveRow(row) {
  const { actor_type, actor_id } = row.profile;
  clearErrors(row);
  try {
    await apiPut("/v1/trust", {
      actor_type,
      actor_id,
      tier: field(row, "tier").value,
      enforcement_level: field(row, "enforcement_level").value,
      trust_score: parseScore(field(row, "trust_score").value),
    });
    for (const node of row.querySelectorAll("[data-dirty]")) node.removeAttribute("data-dirty");
    row.querySelector(".row-status").textContent = "Saved";
    showToast(`Saved trust of ${actorName(row.profile)}`);
    await onChanged();
  } catch (error) {
    if (!showError(row, error, (name) => field(row, name))) row.querySelector(".row-status").textContent = error.message;
  }
}

async function removeRow(row) {
  const actor = actorName(row.profile);
  if (!window.confirm(`Remove the trust override of ${actor}? The actor goes back to tier B.`)) return;
  const { actor_type, actor_id } = row.profile;
  try {
    await apiDelete(`/v1/trust/${encodeURIComponent(actor_type)}/${encodeURIComponent(actor_id)}`);
    showToast(`Removed trust override of ${actor}`);
    await onChanged();
  } catch (error) {
    row.querySelector(".row-status").textContent = error.message;
    showToast(`Not removed: ${error.message}`, "error");
  }
}

/** Load the trust profiles and update the table, leaving rows that are being edited as they are. */
export async function refreshTrust() {
  const profiles = (await apiGet("/v1/trust?limit=500")).sort((left, right) => actorName(left).localeCompare(actorName(right)));
  const tbody = document.querySelector("#trust-table tbody");
  const actors = new Set(profiles.map(actorName));
  for (const [actor, row] of rows) {
    if (!actors.has(actor) && !isEditing(row)) {
      row.remove();
      rows.delete(actor);
    }
  }
  const ordered = profiles.map((profile) => {
    const actor = actorName(profile);
    if (!rows.has(actor)) rows.set(actor, buildRow(profile));
    const row = rows.get(actor);
    if (!isEditing(row)) fillRow(row, profile);
    return row;
  });
  const current = [...tbody.children];
  if (current.length !== ordered.length || current.some((row, index) => row !== ordered[index])) {
    tbody.replaceChildren(...ordered);
  }
  if (ordered.length === 0) tbody.replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: 5, text: "No trust overrides: every actor is tier B." })));
}

/** Wire the "Add trust override" form. */
export function setUpTrustForm() {
  const form = document.getElementById("trust-add-form");
  for (const node of form.querySelectorAll("input, select")) node.id ||= `trust-add-${node.name}`;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const message = form.querySelector(".form-error");
    message.hidden = true;
    clearErrors(form);
    const fields = form.elements;
    try {
      const saved = await apiPut("/v1/trust", {
        actor_type: fields.actor_type.value,
        actor_id: fields.actor_id.value,
        tier: fields.tier.value,
        enforcement_level: fields.enforcement_level.value,
        trust_score: parseScore(fields.trust_score.value),
      });
      showToast(`Saved trust of ${actorName(saved ?? { actor_type: fields.actor_type.value, actor_id: fields.actor_id.value })}`);
      form.reset();
      await onChanged();
    } catch (error) {
      showError(form, error, (name) => fields[name]);
      message.textContent = error.message;
      message.hidden = false;
    }
  });
}
