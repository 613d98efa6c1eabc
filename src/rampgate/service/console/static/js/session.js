// What the signed-in operator may do, and the messages the page shows them.

export const role = document.body.dataset.role === "admin" ? "admin" : "readonly";
export const canChange = role === "admin";

/**
 * Mark `control` as one that changes something. A read-only session gets it
 * disabled, with a tooltip saying why; the API rejects such changes anyway.
 */
export function changeControl(control) {
  control.setAttribute("data-change", "");
  if (!canChange) {
    control.disabled = true;
    control.title = "Read-only session: changes are disabled";
  }
  return control;
}

/** Disable every change control under `root` in a read-only session. */
export function lockChangeControls(root = document) {
  for (const control of root.querySelectorAll("[data-change]")) changeControl(control);
}

let toastTimer = null;

/** Show a short status message at the bottom of the page; errors stay longer. */
export function showToast(message, kind = "ok") {
  const toast = document.getElementById("toast");
  toast.textContent = message;
  toast.dataset.kind = kind;
  toast.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { toast.hidden = true; }, kind === "error" ? 8000 : 4000);
}

/** Show or clear the error line of a section, for a failed load. */
export function setSectionError(sectionId, error) {
  const line = document.querySelector(`#${sectionId} .section-error`);
  if (!line) return;
  if (error) {
    line.textContent = `Could not load: ${error.message}`;
    line.hidden = false;
  } else {
    line.textContent = "";
    line.hidden = true;
  }
}

/**
 * Show the API's validation message next to `input` (or clear it with null),
 * linked with aria-describedby so screen readers read it with the field.
 */
export function setFieldError(input, message) {
  const id = `${input.id}-error`;
  let line = document.getElementById(id);
  if (!message) {
    input.removeAttribute("aria-invalid");
    input.removeAttribute("aria-describedby");
    line?.remove();
    return;
  }
  if (!line) {
    line = document.createElement("span");
    line.id = id;
    line.className = "field-error";
    line.setAttribute("role", "alert");
    input.insertAdjacentElement("afterend", line);
  }
  line.textContent = message;
  input.setAttribute("aria-invalid", "true");
  input.setAttribute("aria-describedby", id);
}
