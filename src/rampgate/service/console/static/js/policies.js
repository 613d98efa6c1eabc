// The policy table, edited inline: one row per policy, saved with PUT /v1/limits.

import { ApiError, apiDelete, apiGet, apiPut } from "./api.js";
import { el, hiddenText, isEditing, trackDirty } from "./dom.js";
import { parseInteger } from "./flags.js";
import { changeControl, setFieldError, showToast } from "./session.js";

const ALGORITHMS = ["token_bucket", "fixed_window", "sliding_window", "gcra"];
const FAIL_MODES = ["open", "closed"];
const SCOPE_ORDER = { global: 0, tier: 1, actor: 2 };
// API field names, as its validation errors spell them, mapped to the row's inputs.
const FIELD_INPUTS = {
  limit: "limit", limit_value: "limit", window: "window", window_seconds: "window", burst: "burst",
  algorithm: "algorithm", fail_mode: "fail_mode", enabled: "enabled",
};

const rows = new Map();
let onChanged = () => {};

export function setPolicyChangeHandler(handler) {
  onChanged = handler;
}

/** Return the words that name a policy in labels: "tier B media_upload", "global search", "actor user/u-1 follow". */
export function policyLabel(policy) {
  if (policy.scope === "tier") return `tier ${policy.tier} ${policy.action}`;
  if (policy.scope === "actor") return `actor ${policy.actor_type}/${policy.actor_id} ${policy.action}`;
  return `global ${policy.action}`;
}

const policyKey = (policy) => policy.policy ?? policyLabel(policy);
const slug = (text) => text.replace(/[^a-zA-Z0-9_-]/g, "-");

function compare(left, right) {
  return left.action.localeCompare(right.action)
    || SCOPE_ORDER[left.scope] - SCOPE_ORDER[right.scope]
    || String(left.tier ?? "").localeCompare(String(right.tier ?? ""))
    || `${left.actor_type}/${left.actor_id}`.localeCompare(`${right.actor_type}/${right.actor_id}`);
}

function select(options, attrs) {
  return el("select", attrs, ...options.map((value) => el("option", { value, text: value })));
}

const COLUMN_NAMES = {
  algorithm: "Algorithm", limit: "Limit", window: "Window (s)", burst: "Burst", fail_mode: "Fail mode", enabled: "Enabled",
};

function labelledCell(name, label, control) {
  control.id = `policy-${slug(label)}-${name}`;
  control.setAttribute("aria-label", label);
  control.dataset.name = name;
  changeControl(control);
  trackDirty(control);
  return el("td", { "data-label": COLUMN_NAMES[name] }, control);
}

function buildRow(policy) {
  const label = policyLabel(policy);
  const save = changeControl(el("button", { type: "button", class: "primary" }, "Save", hiddenText(` ${label}`)));
  const remove = changeControl(el("button", { type: "button" }, "Delete", hiddenText(` ${label}`)));
  const status = el("span", { class: "row-status", role: "status" });
  const row = el("tr", { dataset: { policy: policyKey(policy), tier: policy.tier ?? "", action: policy.action } },
    el("th", { scope: "row" }, el("span", { class: "mono", text: policy.policy ?? label })),
    labelledCell("algorithm", `Algorithm for ${label}`, select(ALGORITHMS, {})),
    labelledCell("limit", `Limit for ${label}`, el("input", { type: "number", inputmode: "numeric", class: "narrow" })),
    labelledCell("window", `Window in seconds for ${label}`, el("input", { type: "number", inputmode: "numeric", class: "narrow" })),
    labelledCell("burst", `Burst for ${label}`, el("input", { type: "number", inputmode: "numeric", class: "narrow", placeholder: "none" })),
    labelledCell("fail_mode", `Fail mode for ${label}`, select(FAIL_MODES, {})),
    labelledCell("enabled", `Enabled ${label}`, el("input", { type: "checkbox" })),
    el("td", { class: "row-actions" }, save, remove, status),
  );
  save.addEventListener("click", () => savePolicy(row));
  remove.addEventListener("click", () => deletePolicy(row));
  return row;
}

function input(row, name) {
  return row.querySelector(`[data-name="${name}"]`);
}

function fillRow(row, policy) {
  row.policyData = policy;
  input(row, "algorithm").value = policy.algorithm;
  input(row, "limit").value = String(policy.limit);
  input(row, "window").value = String(policy.window_seconds);
  input(row, "burst").value = policy.burst === null || policy.burst === undefined ? "" : String(policy.burst);
  input(row, "fail_mode").value = policy.fail_mode;
  input(row, "enabled").checked = Boolean(policy.enabled);
  row.dataset.limit = String(policy.limit);
}

function clearRowErrors(row) {
  for (const control of row.querySelectorAll('[aria-invalid="true"]')) setFieldError(control, null);
  row.querySelector(".row-status").textContent = "";
}

async function savePolicy(row) {
  const policy = row.policyData;
  const body = {
    scope: policy.scope,
    tier: policy.tier,
    actor_type: policy.actor_type,
    actor_id: policy.actor_id,
    action: policy.action,
    algorithm: input(row, "algorithm").value,
    limit: parseInteger(input(row, "limit").value),
    window_seconds: parseInteger(input(row, "window").value),
    burst: parseInteger(input(row, "burst").value),
    fail_mode: input(row, "fail_mode").value,
    cost_per_action: policy.cost_per_action,
    enabled: input(row, "enabled").checked,
  };
  clearRowErrors(row);
  try {
    const saved = await apiPut("/v1/limits", body);
    for (const control of row.querySelectorAll("[data-dirty]")) control.removeAttribute("data-dirty");
    if (saved) fillRow(row, saved);
    row.querySelector(".row-status").textContent = "Saved";
    showToast(`Saved ${policyLabel(policy)}`);
    await onChanged();
  } catch (error) {
    showValidationError(row, error);
  }
}

/** Put the API's message next to the field it names; otherwise into the row's status cell. */
function showValidationError(row, error) {
  const name = error instanceof ApiError ? FIELD_INPUTS[error.field] : undefined;
  if (name) {
    setFieldError(input(row, name), error.message);
  } else {
    row.querySelector(".row-status").textContent = error.message;
  }
  showToast(`Not saved: ${error.message}`, "error");
}

async function deletePolicy(row) {
  const policy = row.policyData;
  if (!window.confirm(`Delete the policy ${policy.policy ?? policyLabel(policy)}?`)) return;
  try {
    await apiDelete(`/v1/limits/${encodeURIComponent(policy.config_id)}`);
    showToast(`Deleted ${policyLabel(policy)}`);
    await onChanged();
  } catch (error) {
    row.querySelector(".row-status").textContent = error.message;
    showToast(`Not deleted: ${error.message}`, "error");
  }
}

/** Load the policies and update the table, leaving rows that are being edited as they are. */
export async function refreshPolicies() {
  const policies = (await apiGet("/v1/limits")).sort(compare);
  const tbody = document.querySelector("#policies-table tbody");
  const keys = new Set(policies.map(policyKey));
  for (const [key, row] of rows) {
    if (!keys.has(key) && !isEditing(row)) {
      row.remove();
      rows.delete(key);
    }
  }

  const ordered = policies.map((policy) => {
    const key = policyKey(policy);
    if (!rows.has(key)) rows.set(key, buildRow(policy));
    const row = rows.get(key);
    if (!isEditing(row)) fillRow(row, policy);
    else row.policyData = policy;
    return row;
  });
  const current = [...tbody.children];
  if (current.length !== ordered.length || current.some((row, index) => row !== ordered[index])) {
    tbody.replaceChildren(...ordered);
  }
  if (ordered.length === 0) tbody.replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: 8, text: "No policies." })));
  updateActionFilter(policies);
  applyFilters();
}

function updateActionFilter(policies) {
  const select = document.getElementById("policy-action-filter");
  const actions = [...new Set(policies.map((policy) => policy.action))].sort();
  const known = [...select.options].slice(1).map((option) => option.value);
  if (known.join(",") === actions.join(",")) return;
  const chosen = select.value;
  select.replaceChildren(el("option", { value: "", text: "all" }), ...actions.map((action) => el("option", { value: action, text: action })));
  select.value = actions.includes(chosen) ? chosen : "";
}

/** Show only the rows of the chosen tier and action; a tier filter hides global and actor policies. */
function applyFilters() {
  const tier = document.getElementById("policy-tier-filter").value;
  const action = document.getElementById("policy-action-filter").value;
  for (const row of rows.values()) {
    row.hidden = (tier !== "" && row.dataset.tier !== tier) || (action !== "" && row.dataset.action !== action);
  }
}

function showScopeFields(form) {
  const scope = form.elements.scope.value;
  for (const field of form.querySelectorAll("[data-scope-field]")) field.hidden = field.dataset.scopeField !== scope;
}

/** Wire the "Add a policy" form. */
export function setUpPolicyForm() {
  document.getElementById("policy-tier-filter").addEventListener("change", applyFilters);
  document.getElementById("policy-action-filter").addEventListener("change", applyFilters);
  const form = document.getElementById("policy-add-form");
  for (const control of form.querySelectorAll("input, select")) control.id ||= `policy-add-${control.name}`;
  form.elements.scope.addEventListener("change", () => showScopeFields(form));
  showScopeFields(form);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const fields = form.elements;
    const scope = fields.scope.value;
    const body = {
      scope,
      tier: scope === "tier" ? fields.tier.value : null,
      actor_type: scope === "actor" ? fields.actor_type.value : null,
      actor_id: scope === "actor" ? fields.actor_id.value : null,
      action: fields.action.value.trim(),
      limit: parseInteger(fields.limit.value),
      window_seconds: parseInteger(fields.window_seconds.value),
    };
    await submitForm(form, body);
  });
}

async function submitForm(form, body) {
  const message = form.querySelector(".form-error");
  message.hidden = true;
  for (const control of form.querySelectorAll('[aria-invalid="true"]')) setFieldError(control, null);
  try {
    const saved = await apiPut("/v1/limits", body);
    showToast(`Saved ${policyLabel(saved ?? body)}`);
    form.reset();
    showScopeFields(form);
    await onChanged();
  } catch (error) {
    const field = error instanceof ApiError ? form.elements[error.field === "window" ? "window_seconds" : error.field] : null;
    if (field instanceof HTMLElement) setFieldError(field, error.message);
    message.textContent = error.message;
    message.hidden = false;
  }
}
