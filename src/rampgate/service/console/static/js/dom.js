// Small DOM helpers shared by every part of the console.

/**
 * Create an element: attributes in `attrs` (`class`, `text`, `dataset`, booleans,
 * anything else as an attribute), then the children (nodes or strings).
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (value === true) node.setAttribute(name, "");
    else node.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** Create an SVG element with the given attributes. */
export function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined) continue;
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child) node.append(child);
  }
  return node;
}

/** Create a span that screen readers read and sighted users do not see. */
export function hiddenText(text) {
  return el("span", { class: "visually-hidden", text });
}

export function replaceRows(tbody, rows, emptyText, columns) {
  if (rows.length === 0) {
    tbody.replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: columns, text: emptyText })));
  } else {
    tbody.replaceChildren(...rows);
  }
}

// Operators compare these times with logs, so they are 24-hour clock times.
const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });
const dateTimeFormat = new Intl.DateTimeFormat(undefined, {
  month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
});

/** Format an ISO 8601 time as local time, with the date when it is not today. */
export function formatTime(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  const today = new Date();
  const sameDay = date.toDateString() === today.toDateString();
  return (sameDay ? timeFormat : dateTimeFormat).format(date);
}

/** Create a <time> element showing local time, with the ISO value as its datetime and tooltip. */
export function timeElement(iso) {
  return el("time", { datetime: iso, title: iso, text: formatTime(iso) });
}

/** Format seconds as "1 h 05 min", "4 min 10 s" or "12 s". */
export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "–";
  const total = Math.max(0, Math.round(seconds));
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const rest = total % 60;
  if (hours > 0) return `${hours} h ${String(minutes).padStart(2, "0")} min`;
  if (minutes > 0) return `${minutes} min ${String(rest).padStart(2, "0")} s`;
  return `${rest} s`;
}

/** Format a ratio (0.0123) as a percentage ("1.23 %"). */
export function formatRatio(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  const percent = value * 100;
  const digits = percent !== 0 && Math.abs(percent) < 10 ? 2 : 1;
  return `${percent.toFixed(digits)} %`;
}

export function actorName(item) {
  return `${item.actor_type}:${item.actor_id}`;
}

/** True while the user is typing in, or has unsaved edits in, a control inside `root`. */
export function isEditing(root) {
  if (root.contains(document.activeElement) && document.activeElement.matches("input, select, textarea")) {
    return true;
  }
  return root.querySelector("[data-dirty]") !== null;
}

/** Mark a control as edited until it is saved, so live refreshes leave it alone. */
export function trackDirty(control) {
  control.addEventListener("input", () => control.setAttribute("data-dirty", ""));
  control.addEventListener("change", () => control.setAttribute("data-dirty", ""));
}
