/**
 * Client of the rampgate decision service for edge functions and servers.
 *
 * A dependency-free ES module for Deno, Node.js 18 or later, and other
 * runtimes with the global `fetch`, `AbortController`, `Headers` and
 * `Response`. `checkRateLimit` calls `POST /v1/check`; `rateLimitResponse`
 * builds the 429 that rampgate's own protected endpoints send, with
 * `Retry-After`, the `RateLimit-Policy` and `RateLimit` headers and the JSON
 * body `{error, action, tier, retryAfter, limit, windowSeconds, message}`.
 * All times are in seconds unless a name ends in `Ms`.
 *
 * @module rampgate
 */

export const DEFAULT_TIMEOUT_MS = 1000;
export const ACTOR_TYPES = Object.freeze(["user", "device", "ip", "org", "service"]);
export const ON_ERROR_CHOICES = Object.freeze(["open", "closed", "throw"]);
export const SUPPORTED_LANGUAGES = Object.freeze(["en", "ru"]);

const CHECK_PATH = "/v1/check";
const ACTION_PATTERN = /^[a-z0-9_:.-]{1,64}$/;
const MAX_ACTOR_ID_LENGTH = 256;
const MAX_COST = 1_000_000;
// The service blocks for this long when its own store fails under a closed policy.
const STORE_ERROR_RETRY_AFTER = 1;

/**
 * One decision, with the fields `POST /v1/check` returns plus what this module adds.
 *
 * @typedef {object} Decision
 * @property {boolean} allowed What the caller must do.
 * @property {"enforce" | "shadow" | "bypass" | "fail_open"} mode How the decision was made.
 * @property {boolean} would_block The outcome had the decision been enforced.
 * @property {"ok" | "limited" | "exceeds_capacity" | "suspended" | "no_policy" | "store_error"} reason
 * @property {string} action
 * @property {string | null} tier Trust tier `A` to `D`; null when the service was not reached.
 * @property {string | null} policy For example `tier:B:media_upload`.
 * @property {number | null} limit
 * @property {number | null} window_seconds
 * @property {number | null} remaining Whole units left after this request.
 * @property {number} reset_after Seconds until the counter is full again.
 * @property {number | null} retry_after Seconds; 0 when allowed, null when the request can never pass.
 * @property {string | null} message End-user sentence of a blocked decision.
 * @property {"en" | "ru"} language Language of `message`, negotiated from `acceptLanguage`.
 * @property {Record<string, string>} headers `RateLimit-Policy` and `RateLimit` as the service sent them.
 * @property {string} [error] Why the service call failed, when this decision replaces the service's.
 */

/**
 * @typedef {object} CheckOptions
 * @property {string} url Base URL of the rampgate service, such as `https://rampgate.internal:8080`.
 * @property {string} token The service token (`RAMPGATE_SERVICE_TOKEN`).
 * @property {"user" | "device" | "ip" | "org" | "service"} actorType
 * @property {string} actorId 1 to 256 characters.
 * @property {string} action 1 to 64 characters of `a-z 0-9 _ : . -`.
 * @property {number} [cost] Integer from 1 to 1,000,000; default 1.
 * @property {string} [requestId] Recorded with the decision, for appeals and audits.
 * @property {Record<string, unknown>} [context] A JSON object recorded with the decision.
 * @property {string} [acceptLanguage] The end user's `Accept-Language`, so that `message` comes in that language.
 * @property {number} [timeoutMs] Bound on the whole call in milliseconds; default 1000.
 * @property {"open" | "closed" | "throw"} [onError] What a timeout, a network error or a 5xx returns:
 *   `open` (default) allows the request, `closed` blocks it for one second, `throw` rejects.
 * @property {typeof fetch} [fetch] The fetch to use; default the global one.
 */

/**
 * @typedef {object} ResponseOptions
 * @property {string} [acceptLanguage] Language of the message; the decision's own message is used when it is in that language.
 * @property {string} [requestId] Sent back in `X-Request-ID`, as the service's protected endpoints do.
 * @property {HeadersInit} [headers] More headers for the response, such as CORS headers.
 */

/** An error raised by this module: invalid input (`field`), a rejected token (`status`), or a failed call. */
export class RampgateError extends Error {
  /**
   * @param {string} message
   * @param {{field?: string, value?: unknown, status?: number, cause?: unknown}} [details]
   */
  constructor(message, details = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = "RampgateError";
    /** @type {string | undefined} Name of the invalid input. */
    this.field = details.field;
    /** @type {unknown} The invalid value. */
    this.value = details.value;
    /** @type {number | undefined} HTTP status returned by the service. */
    this.status = details.status;
  }
}

/**
 * Ask the rampgate service whether an actor may perform an action.
 *
 * Resolves to the decision whether the request is allowed or blocked.
 * Rejects with a {@link RampgateError} for invalid options, a rejected
 * token (401, 403), a request the service calls invalid (400, 422) or
 * another status below 500, such as 404 for a wrong URL, since none of
 * these goes away by itself. Timeouts, network errors and 5xx statuses
 * follow `onError`.
 *
 * @param {CheckOptions} options
 * @returns {Promise<Decision>}
 */
export async function checkRateLimit(options) {
  const checked = checkOptions(options);
  const language = negotiateLanguage(checked.acceptLanguage);

  const payload = { actor_type: checked.actorType, actor_id: checked.actorId, action: checked.action, cost: checked.cost };
  if (checked.requestId != null) payload.request_id = checked.requestId;
  if (checked.context != null) payload.context = checked.context;

  const headers = {
    Authorization: `Bearer ${checked.token}`,
    "Content-Type": "application/json",
    Accept: "application/json",
  };
  if (checked.acceptLanguage) headers["Accept-Language"] = checked.acceptLanguage;

  // One timer covers the connection, the headers and the body.
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), checked.timeoutMs);
  let response;
  let body;
  try {
    response = await checked.fetch(checked.endpoint, {
      method: "POST",
      headers,
      body: JSON.stringify(payload),
      signal: controller.signal,
    });
    body = await response.text();
  } catch (error) {
    const reason = controller.signal.aborted
      ? `timed out after ${checked.timeoutMs} ms`
      : `could not be reached: ${describeError(error)}`;
    return failedDecision(checked, language, `the service at ${checked.url} ${reason}`, error);
  } finally {
    clearTimeout(timer);
  }

  return readResponse(checked, language, response, body);
}

/**
 * Build the 429 response for a blocked decision, exactly as rampgate's protected endpoints send it.
 *
 * `Retry-After` is the whole seconds of `retry_after`, at least 1. It is left
 * out when the request can never pass, and then the body's `retryAfter` is
 * null.
 *
 * @param {Decision} decision A blocked decision from {@link checkRateLimit}.
 * @param {ResponseOptions} [options]
 * @returns {Response}
 */
export function rateLimitResponse(decision, options = {}) {
  if (decision == null || typeof decision !== "object") {
    throw new RampgateError("invalid decision: expected the object that checkRateLimit resolved to", {
      field: "decision",
      value: decision,
    });
  }
  if (decision.allowed) {
    throw new RampgateError("invalid decision: it is allowed, and only a blocked decision gets a 429", {
      field: "decision.allowed",
      value: true,
    });
  }

  const retryAfter = headerSeconds(decision.retry_after);
  const headers = new Headers(options.headers);
  headers.set("Content-Type", "application/json");
  for (const [name, value] of Object.entries(blockedRateLimitHeaders(decision, retryAfter))) {
    headers.set(name, value);
  }
  if (retryAfter !== null) headers.set("Retry-After", String(retryAfter));
  if (options.requestId) headers.set("X-Request-ID", options.requestId);

  const body = {
    error: "rate_limited",
    action: decision.action,
    tier: decision.tier,
    retryAfter,
    limit: decision.limit,
    windowSeconds: decision.window_seconds,
    message: messageFor(decision, options.acceptLanguage),
  };
  return new Response(JSON.stringify(body), { status: 429, headers });
}

/**
 * Return the RateLimit headers to copy onto the response of an allowed request.
 *
 * Only enforced decisions get them. In shadow mode the counters describe a
 * limit that does not apply to the actor yet, and a client that paces itself
 * by `r` and `t` would slow down before the rollout reaches it.
 *
 * @param {Decision} decision
 * @returns {Record<string, string>}
 */
export function rateLimitHeaders(decision) {
  if (decision == null || decision.mode !== "enforce") return {};
  return { ...decision.headers };
}

/**
 * Return the end-user sentence for a blocked request, as the service words it.
 *
 * @param {string} reason The decision's reason.
 * @param {number | null} retryAfter Seconds, or null when the request can never pass.
 * @param {string} [language] `en` (default) or `ru`.
 * @returns {string}
 */
export function blockedMessage(reason, retryAfter, language = "en") {
  const russian = language === "ru";
  if (reason === "exceeds_capacity" || retryAfter == null) {
    return russian
      ? "Этот запрос превышает допустимый лимит и не может быть выполнен."
      : "This request is larger than the limit allows and cannot be accepted.";
  }

  const wait = formatWait(retryAfter, russian ? "ru" : "en");
  if (reason === "suspended") {
    return russian
      ? `Действия вашей учётной записи временно ограничены. Повторите попытку через ${wait}.`
      : `Your account is temporarily restricted. Try again in ${wait}.`;
  }
  if (reason === "store_error") {
    return russian
      ? `Сервис временно недоступен. Повторите попытку через ${wait}.`
      : `The service is temporarily unavailable. Try again in ${wait}.`;
  }
  return russian
    ? `Слишком много запросов. Повторите попытку через ${wait}.`
    : `Too many requests. Try again in ${wait}.`;
}

/**
 * Choose `en` or `ru` from an `Accept-Language` value, as the service does.
 *
 * Follows the q-values (`ru;q=0.9, en;q=0.8`). A tag matches on its primary
 * subtag, so `ru-RU` selects Russian, and `*` stands for every language the
 * header does not name. Among equal q-values the earlier entry wins. Entries
 * with an invalid q-value are ignored, and English is the default.
 *
 * @param {string | null | undefined} acceptLanguage
 * @returns {"en" | "ru"}
 */
export function negotiateLanguage(acceptLanguage) {
  if (!acceptLanguage) return "en";

  // language -> [quality, position of the entry]
  const named = new Map();
  let wildcard = null;
  acceptLanguage.split(",").forEach((entry, position) => {
    const [tagText, ...parameters] = entry.split(";");
    const tag = tagText.trim().toLowerCase();
    const quality = parseQuality(parameters);
    if (!tag || quality === null) return;
    if (tag === "*") {
      if (wildcard === null) wildcard = [quality, position];
      return;
    }
    const language = tag.split("-")[0];
    if (SUPPORTED_LANGUAGES.includes(language) && (!named.has(language) || quality > named.get(language)[0])) {
      named.set(language, [quality, position]);
    }
  });

  let best = "en";
  let bestRank = null;
  for (const language of SUPPORTED_LANGUAGES) {
    const rank = named.get(language) ?? wildcard;
    if (rank === null || rank[0] <= 0) continue;
    if (bestRank === null || rank[0] > bestRank[0] || (rank[0] === bestRank[0] && rank[1] < bestRank[1])) {
      best = /** @type {"en" | "ru"} */ (language);
      bestRank = rank;
    }
  }
  return best;
}

// -- helpers ---------------------------------------------------------------

// RFC 9110 qvalue: 0 to 1 with at most three decimals.
const QUALITY_PATTERN = /^(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)$/;

/**
 * Return the q-value among `;`-separated parameters: 1 when absent, null when invalid.
 *
 * @param {string[]} parameters
 * @returns {number | null}
 */
function parseQuality(parameters) {
  for (const parameter of parameters) {
    const separator = parameter.indexOf("=");
    const name = (separator === -1 ? parameter : parameter.slice(0, separator)).trim().toLowerCase();
    if (name === "q") {
      const value = separator === -1 ? "" : parameter.slice(separator + 1).trim();
      return QUALITY_PATTERN.test(value) ? Number(value) : null;
    }
  }
  return 1;
}

/**
 * @param {CheckOptions} options
 */
function checkOptions(options) {
  if (options == null || typeof options !== "object") {
    invalid("options", options, "an object with url, token, actorType, actorId and action");
  }
  const {
    url,
    token,
    actorType,
    actorId,
    action,
    cost = 1,
    requestId,
    context,
    acceptLanguage,
    timeoutMs = DEFAULT_TIMEOUT_MS,
    onError = "open",
  } = options;
  const fetchFunction = options.fetch ?? globalThis.fetch;

  if (typeof url !== "string" || !/^https?:\/\//.test(url)) invalid("url", url, "an http:// or https:// URL of the rampgate service");
  if (typeof token !== "string" || token.length === 0) invalid("token", token === undefined ? token : "[hidden]", "the service token, a non-empty string");
  if (!ACTOR_TYPES.includes(actorType)) invalid("actorType", actorType, `one of ${ACTOR_TYPES.join(", ")}`);
  // The service counts characters (code points), not UTF-16 units.
  if (typeof actorId !== "string" || actorId.length === 0 || [...actorId].length > MAX_ACTOR_ID_LENGTH) {
    invalid("actorId", actorId, `a string of 1 to ${MAX_ACTOR_ID_LENGTH} characters`);
  }
  if (typeof action !== "string" || !ACTION_PATTERN.test(action)) invalid("action", action, "1 to 64 characters of a-z 0-9 _ : . -");
  if (!Number.isInteger(cost) || cost < 1 || cost > MAX_COST) invalid("cost", cost, `an integer from 1 to ${MAX_COST}`);
  if (requestId != null && typeof requestId !== "string") invalid("requestId", requestId, "a string");
  if (context != null && (typeof context !== "object" || Array.isArray(context))) invalid("context", context, "a plain object");
  if (acceptLanguage != null && typeof acceptLanguage !== "string") invalid("acceptLanguage", acceptLanguage, "a string");
  if (typeof timeoutMs !== "number" || !Number.isFinite(timeoutMs) || timeoutMs <= 0) {
    invalid("timeoutMs", timeoutMs, "a number of milliseconds greater than 0");
  }
  if (!ON_ERROR_CHOICES.includes(onError)) invalid("onError", onError, `one of ${ON_ERROR_CHOICES.join(", ")}`);
  if (typeof fetchFunction !== "function") invalid("fetch", fetchFunction, "a fetch function; this runtime has no global fetch");

  const base = url.replace(/\/+$/, "");
  const endpoint = base.endsWith(CHECK_PATH) ? base : base + CHECK_PATH;
  return {
    url: base,
    endpoint,
    token,
    actorType,
    actorId,
    action,
    cost,
    requestId,
    context,
    acceptLanguage,
    timeoutMs,
    onError,
    fetch: fetchFunction,
  };
}

/**
 * @param {string} field
 * @param {unknown} value
 * @param {string} expected
 * @returns {never}
 */
function invalid(field, value, expected) {
  let text;
  try {
    text = typeof value === "string" ? JSON.stringify(value) : String(value);
  } catch {
    text = Object.prototype.toString.call(value);
  }
  if (text.length > 80) text = `${text.slice(0, 77)}...`;
  throw new RampgateError(`invalid ${field}: ${text}; expected ${expected}`, { field, value });
}

/**
 * Describe a fetch failure; Node's fetch puts the system error (ECONNREFUSED …) in `cause`.
 *
 * @param {unknown} error
 */
function describeError(error) {
  if (!(error instanceof Error)) return String(error);
  const cause = /** @type {{message?: string} | undefined} */ (error.cause);
  return cause?.message ? `${error.message} (${cause.message})` : error.message;
}

/**
 * @param {ReturnType<typeof checkOptions>} checked
 * @param {"en" | "ru"} language
 * @param {Response} response
 * @param {string} text
 * @returns {Decision}
 */
function readResponse(checked, language, response, text) {
  const status = response.status;
  if (status === 401 || status === 403) {
    throw new RampgateError(
      `the service at ${checked.url} rejected the token with ${status}; check RAMPGATE_SERVICE_TOKEN on both sides`,
      { status },
    );
  }

  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = null;
  }
  if (status === 400 || status === 422) {
    const field = body?.field ?? "request";
    throw new RampgateError(body?.message ?? `the service rejected the request with ${status}`, {
      field,
      value: body?.value,
      status,
    });
  }
  if (status >= 500) {
    return failedDecision(checked, language, `the service at ${checked.url} returned ${status}`, undefined);
  }
  if (status !== 200 || body === null || typeof body.allowed !== "boolean") {
    throw new RampgateError(`unexpected response from ${checked.endpoint}: status ${status}; expected 200 with a decision`, {
      status,
    });
  }

  const headers = {};
  for (const name of ["RateLimit-Policy", "RateLimit"]) {
    const value = response.headers.get(name);
    if (value !== null) headers[name] = value;
  }
  return { ...body, language, headers };
}

/**
 * Build the decision that replaces the service's when the call failed, as `onError` sets.
 *
 * @param {ReturnType<typeof checkOptions>} checked
 * @param {"en" | "ru"} language
 * @param {string} error
 * @param {unknown} cause
 * @returns {Decision}
 */
function failedDecision(checked, language, error, cause) {
  if (checked.onError === "throw") {
    throw new RampgateError(error, { cause });
  }
  const open = checked.onError === "open";
  return {
    allowed: open,
    mode: open ? "fail_open" : "enforce",
    would_block: !open,
    reason: "store_error",
    action: checked.action,
    tier: null,
    policy: null,
    limit: null,
    window_seconds: null,
    remaining: open ? null : 0,
    reset_after: open ? 0 : STORE_ERROR_RETRY_AFTER,
    retry_after: open ? 0 : STORE_ERROR_RETRY_AFTER,
    message: open ? null : blockedMessage("store_error", STORE_ERROR_RETRY_AFTER, language),
    language,
    headers: {},
    error,
  };
}

/**
 * @param {Decision} decision
 * @param {string | undefined} acceptLanguage
 */
function messageFor(decision, acceptLanguage) {
  const language = acceptLanguage == null ? decision.language ?? "en" : negotiateLanguage(acceptLanguage);
  if (decision.message && (decision.language ?? "en") === language) return decision.message;
  return blockedMessage(decision.reason, decision.retry_after, language);
}

/**
 * Return the RateLimit headers of a 429: the service's when it sent them, else built from the decision's fields.
 *
 * @param {Decision} decision
 * @param {number | null} retryAfter
 * @returns {Record<string, string>}
 */
function blockedRateLimitHeaders(decision, retryAfter) {
  if (decision.headers && decision.headers["RateLimit-Policy"]) return { ...decision.headers };
  if (decision.limit == null || decision.tier == null) return {};

  const name = `"${decision.tier}.${decision.action}"`;
  const remaining = Math.max(0, Math.min(decision.remaining ?? decision.limit, decision.limit));
  let ratelimit = `${name};r=${remaining}`;
  if (retryAfter !== null) ratelimit += `;t=${retryAfter}`;
  return {
    "RateLimit-Policy": `${name};q=${decision.limit};w=${decision.window_seconds}`,
    RateLimit: ratelimit,
  };
}

/**
 * Whole seconds (at least 1) for `Retry-After` and `t=`, ignoring float noise below 1 ns; null stays null.
 *
 * @param {number | null | undefined} seconds
 * @returns {number | null}
 */
function headerSeconds(seconds) {
  if (seconds == null) return null;
  return Math.max(1, Math.ceil(seconds - 1e-9));
}

const EN_UNITS = { second: ["second", "seconds"], minute: ["minute", "minutes"], hour: ["hour", "hours"] };
// Russian nouns take one of three forms after a number: one (1, 21, 31 …),
// few (2–4, 22–24 …) and many (0, 5–20, 25–30 …).
const RU_UNITS = {
  second: ["секунду", "секунды", "секунд"],
  minute: ["минуту", "минуты", "минут"],
  hour: ["час", "часа", "часов"],
};

/**
 * @param {number} number
 * @param {string[]} forms
 */
function russianPlural(number, forms) {
  const tens = number % 100;
  const units = number % 10;
  if (tens >= 11 && tens <= 14) return forms[2];
  if (units === 1) return forms[0];
  if (units >= 2 && units <= 4) return forms[1];
  return forms[2];
}

/**
 * Round a wait up to the unit a person would use: seconds, minutes or hours.
 *
 * @param {number} seconds
 * @param {"en" | "ru"} language
 */
function formatWait(seconds, language) {
  const whole = Math.max(1, Math.ceil(seconds - 1e-9));
  const minutes = Math.ceil(whole / 60);
  let number = whole;
  let unit = "second";
  if (whole >= 60 && minutes < 60) {
    number = minutes;
    unit = "minute";
  } else if (whole >= 60) {
    number = Math.ceil(whole / 3600);
    unit = "hour";
  }
  if (language === "ru") return `${number} ${russianPlural(number, RU_UNITS[unit])}`;
  const [singular, plural] = EN_UNITS[unit];
  return `${number} ${number === 1 ? singular : plural}`;
}
