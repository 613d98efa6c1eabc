// Appeals against blocks: list them by status, uphold or reject the open ones with a note.

import { apiGet, apiPost, query } from "./api.js";
import { actorName, el, hiddenText, isEditing, replaceRows, timeElement } from "./dom.js";
import { changeControl, showToast } from "./session.js";

let onChanged = () => {};

export function setAppealChangeHandler(handler) {
  onChanged = handler;
}

async function resolveAppeal(appeal, decision, note) {
  try {
    await apiPost(`/v1/appeals/${encodeURIComponent(appeal.appeal_id)}/${decision}`, note ? { note } : {});
    showToast(`Appeal ${appeal.appeal_id} ${decision === "uphold" ? "upheld" : "rejected"}`);
  } catch (error) {
    showToast(`Appeal ${appeal.appeal_id} not changed: ${error.message}`, "error");
  }
  await onChanged();
}

function appealRow(appeal) {
  const id = appeal.appeal_id;
  const actions = el("td", { class: "row-actions" });
  let noteCell;
  if (appeal.status === "open") {
    const note = changeControl(el("input", { type: "text", id: `appeal-${id}-note`, "aria-label": `Note for appeal ${id}`, placeholder: "optional" }));
    note.addEventListener("input", () => note.setAttribute("data-dirty", ""));
    const uphold = changeControl(el("button", { type: "button", class: "primary" }, "Uphold", hiddenText(` appeal ${id}`)));
    const reject = changeControl(el("button", { type: "button" }, "Reject", hiddenText(` appeal ${id}`)));
    uphold.addEventListener("click", () => resolveAppeal(appeal, "uphold", note.value.trim()));
    reject.addEventListener("click", () => resolveAppeal(appeal, "reject", note.value.trim()));
    noteCell = el("td", { "data-label": "Note" }, note);
    actions.append(uphold, reject);
  } else {
    const resolved = [appeal.resolution_note, appeal.resolved_by && `by ${appeal.resolved_by}`].filter(Boolean).join(" ");
    noteCell = el("td", { "data-label": "Resolution", text: resolved || "–" });
  }
  return el("tr", { dataset: { appeal: String(id), status: appeal.status } },
    el("td", { "data-label": "Filed" }, timeElement(appeal.created_at)),
    el("td", { "data-label": "Actor", class: "mono", text: actorName(appeal) }),
    el("td", { "data-label": "Action" }, appeal.action, appeal.request_id ? el("span", { class: "subtle mono", text: ` ${appeal.request_id}` }) : null),
    el("td", { "data-label": "Text", class: "appeal-text", text: appeal.text }),
    el("td", { "data-label": "Status" }, el("span", { class: "status-pill", dataset: { status: appeal.status }, text: appeal.status })),
    noteCell,
    actions,
  );
}

/** Load the appeals of the chosen status; an open note being typed keeps the table as it is. */
export async function refreshAppeals({ force = false } = {}) {
  const table = document.getElementById("appeals-table");
  if (!force && isEditing(table)) return;
  const status = document.getElementById("appeal-status").value;
  const appeals = await apiGet(`/v1/appeals${query({ status })}`);
  replaceRows(table.querySelector("tbody"), appeals.map(appealRow), `No ${status} appeals.`, 7);
}

export function setUpAppeals() {
  document.getElementById("appeal-status").addEventListener("change", () => refreshAppeals({ force: true }));
}
