// The parts of rampgate.mjs that need no rampgate server: input checks,
// messages, the 429 builder, and failures against loopback servers that
// never respond, refuse connections or return 503.
import assert from "node:assert/strict";
import http from "node:http";
import net from "node:net";
import { after, before, describe, test } from "node:test";

import {
  RampgateError,
  blockedMessage,
  checkRateLimit,
  negotiateLanguage,
  rateLimitHeaders,
  rateLimitResponse,
} from "../rampgate.mjs";

const VALID = Object.freeze({
  url: "http://127.0.0.1:9",
  token: "token",
  actorType: "user",
  actorId: "u-42",
  action: "media_upload",
});

/** A blocked decision as the service returns it for the sixth upload of a tier-B user. */
const BLOCKED = Object.freeze({
  allowed: false,
  mode: "enforce",
  would_block: true,
  reason: "limited",
  action: "media_upload",
  tier: "B",
  policy: "tier:B:media_upload",
  limit: 5,
  window_seconds: 60,
  remaining: 0,
  reset_after: 59.99,
  retry_after: 11.995,
  message: "Too many requests. Try again in 12 seconds.",
  language: "en",
  headers: { "RateLimit-Policy": '"B.media_upload";q=5;w=60', RateLimit: '"B.media_upload";r=0;t=12' },
});

/** Listen on a free loopback port and resolve to the server and its URL. */
function listen(server) {
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => resolve(`http://127.0.0.1:${server.address().port}`));
  });
}

describe("input checks", () => {
  const cases = [
    [{ url: "127.0.0.1:8080" }, "url"],
    [{ token: "" }, "token"],
    [{ actorType: "person" }, "actorType"],
    [{ actorId: "" }, "actorId"],
    [{ actorId: "x".repeat(257) }, "actorId"],
    [{ action: "Media Upload" }, "action"],
    [{ cost: 0 }, "cost"],
    [{ cost: 1.5 }, "cost"],
    [{ requestId: 17 }, "requestId"],
    [{ context: ["a"] }, "context"],
    [{ timeoutMs: 0 }, "timeoutMs"],
    [{ onError: "ignore" }, "onError"],
    [{ fetch: "fetch" }, "fetch"],
  ];
  for (const [override, field] of cases) {
    test(`rejects invalid ${field} ${JSON.stringify(override).slice(0, 40)}`, async () => {
      const calls = [];
      const recordingFetch = async (...args) => {
        calls.push(args);
        throw new Error("must not be called");
      };
      await assert.rejects(checkRateLimit({ ...VALID, fetch: recordingFetch, ...override }), (error) => {
        assert.ok(error instanceof RampgateError);
        assert.equal(error.field, field);
        assert.match(error.message, new RegExp(`^invalid ${field}: `));
        return true;
      });
      assert.equal(calls.length, 0);
    });
  }

  test("counts actorId in characters, not UTF-16 units", async () => {
    const sent = [];
    const fetch = async (url, init) => {
      sent.push(JSON.parse(init.body));
      throw new Error("offline");
    };
    const decision = await checkRateLimit({ ...VALID, actorId: "😀".repeat(256), fetch });
    assert.equal(decision.mode, "fail_open");
    assert.equal(sent.length, 1);
  });

  test("never shows the token in an error", async () => {
    await assert.rejects(checkRateLimit({ ...VALID, token: 12345678 }), (error) => {
      assert.equal(error.field, "token");
      assert.doesNotMatch(error.message, /12345678/);
      return true;
    });
  });
});

describe("messages", () => {
  const cases = [
    ["limited", 0.2, "en", "Too many requests. Try again in 1 second."],
    ["limited", 11.995, "en", "Too many requests. Try again in 12 seconds."],
    ["limited", 1, "ru", "Слишком много запросов. Повторите попытку через 1 секунду."],
    ["limited", 3, "ru", "Слишком много запросов. Повторите попытку через 3 секунды."],
    ["limited", 11, "ru", "Слишком много запросов. Повторите попытку через 11 секунд."],
    ["limited", 21, "ru", "Слишком много запросов. Повторите попытку через 21 секунду."],
    ["limited", 61, "ru", "Слишком много запросов. Повторите попытку через 2 минуты."],
    ["limited", 1260, "ru", "Слишком много запросов. Повторите попытку через 21 минуту."],
    ["limited", 3599, "en", "Too many requests. Try again in 1 hour."],
    ["suspended", 3600, "en", "Your account is temporarily restricted. Try again in 1 hour."],
    ["suspended", 7200, "ru", "Действия вашей учётной записи временно ограничены. Повторите попытку через 2 часа."],
    ["store_error", 1, "en", "The service is temporarily unavailable. Try again in 1 second."],
    ["exceeds_capacity", null, "en", "This request is larger than the limit allows and cannot be accepted."],
    ["exceeds_capacity", null, "ru", "Этот запрос превышает допустимый лимит и не может быть выполнен."],
  ];
  for (const [reason, retryAfter, language, expected] of cases) {
    test(`${reason} ${retryAfter} ${language}`, () => {
      assert.equal(blockedMessage(reason, retryAfter, language), expected);
    });
  }

  test("negotiates Accept-Language by q-value and primary subtag", () => {
    assert.equal(negotiateLanguage("ru-RU,ru;q=0.9,en;q=0.8"), "ru");
    assert.equal(negotiateLanguage("en;q=0.5, ru;q=0.6"), "ru");
    assert.equal(negotiateLanguage("de-DE"), "en");
    assert.equal(negotiateLanguage("ru;q=0"), "en");
    assert.equal(negotiateLanguage("ru;q=0.8, en;q=0.8"), "ru");
    assert.equal(negotiateLanguage("de, *;q=0.5"), "en");
    assert.equal(negotiateLanguage("ru;q=abc, en"), "en");
    assert.equal(negotiateLanguage(undefined), "en");
  });
});

describe("rateLimitResponse", () => {
  test("builds the service's 429 from a blocked decision", async () => {
    const response = rateLimitResponse(BLOCKED, { requestId: "req-1", headers: { "Access-Control-Allow-Origin": "*" } });

    assert.equal(response.status, 429);
    assert.equal(response.headers.get("Retry-After"), "12");
    assert.equal(response.headers.get("RateLimit-Policy"), '"B.media_upload";q=5;w=60');
    assert.equal(response.headers.get("RateLimit"), '"B.media_upload";r=0;t=12');
    assert.equal(response.headers.get("Content-Type"), "application/json");
    assert.equal(response.headers.get("X-Request-ID"), "req-1");
    assert.equal(response.headers.get("Access-Control-Allow-Origin"), "*");
    assert.deepEqual(await response.json(), {
      error: "rate_limited",
      action: "media_upload",
      tier: "B",
      retryAfter: 12,
      limit: 5,
      windowSeconds: 60,
      message: "Too many requests. Try again in 12 seconds.",
    });
  });

  test("words the message in the requested language when the decision's is in another", async () => {
    const response = rateLimitResponse(BLOCKED, { acceptLanguage: "ru" });
    const body = await response.json();
    assert.equal(body.message, "Слишком много запросов. Повторите попытку через 12 секунд.");
  });

  test("builds the RateLimit headers when the decision has none", () => {
    const response = rateLimitResponse({ ...BLOCKED, headers: {} });
    assert.equal(response.headers.get("RateLimit-Policy"), '"B.media_upload";q=5;w=60');
    assert.equal(response.headers.get("RateLimit"), '"B.media_upload";r=0;t=12');
  });

  test("leaves out Retry-After when the request can never pass", async () => {
    const decision = { ...BLOCKED, reason: "exceeds_capacity", retry_after: null, remaining: null, message: null, headers: {} };
    const response = rateLimitResponse(decision);
    const body = await response.json();
    assert.equal(response.headers.get("Retry-After"), null);
    assert.equal(response.headers.get("RateLimit"), '"B.media_upload";r=5');
    assert.equal(body.retryAfter, null);
    assert.equal(body.message, "This request is larger than the limit allows and cannot be accepted.");
  });

  test("rejects an allowed decision", () => {
    assert.throws(() => rateLimitResponse({ ...BLOCKED, allowed: true }), (error) => error.field === "decision.allowed");
  });

  test("rateLimitHeaders copies headers of enforced decisions only", () => {
    assert.deepEqual(rateLimitHeaders({ ...BLOCKED, allowed: true }), BLOCKED.headers);
    assert.deepEqual(rateLimitHeaders({ ...BLOCKED, allowed: true, mode: "shadow" }), {});
  });
});

describe("service failures", () => {
  const sockets = new Set();
  const silent = net.createServer((socket) => sockets.add(socket));
  const failing = http.createServer((request, response) => {
    response.statusCode = 503;
    response.end();
  });
  let silentUrl;
  let failingUrl;
  let closedUrl;

  before(async () => {
    silentUrl = await listen(silent);
    failingUrl = await listen(failing);
    const probe = net.createServer();
    closedUrl = await listen(probe);
    await new Promise((resolve) => probe.close(resolve));
  });

  after(async () => {
    for (const socket of sockets) socket.destroy();
    failing.closeAllConnections();
    await Promise.all([new Promise((r) => silent.close(r)), new Promise((r) => failing.close(r))]);
  });

  test("a silent service times out and fails open by default", async () => {
    const decision = await checkRateLimit({ ...VALID, url: silentUrl, timeoutMs: 100 });
    assert.equal(decision.allowed, true);
    assert.equal(decision.mode, "fail_open");
    assert.equal(decision.reason, "store_error");
    assert.match(decision.error, /timed out after 100 ms/);
    assert.deepEqual(rateLimitHeaders(decision), {});
  });

  test("a silent service fails closed with a one-second 429", async () => {
    const decision = await checkRateLimit({ ...VALID, url: silentUrl, timeoutMs: 100, onError: "closed", acceptLanguage: "ru" });
    assert.equal(decision.allowed, false);
    assert.equal(decision.retry_after, 1);

    const response = rateLimitResponse(decision);
    const body = await response.json();
    assert.equal(response.status, 429);
    assert.equal(response.headers.get("Retry-After"), "1");
    assert.equal(body.retryAfter, 1);
    assert.equal(body.message, "Сервис временно недоступен. Повторите попытку через 1 секунду.");
  });

  test("a silent service rejects with onError throw", async () => {
    await assert.rejects(checkRateLimit({ ...VALID, url: silentUrl, timeoutMs: 100, onError: "throw" }), (error) => {
      assert.ok(error instanceof RampgateError);
      assert.match(error.message, /timed out/);
      return true;
    });
  });

  test("a refused connection fails open", async () => {
    const decision = await checkRateLimit({ ...VALID, url: closedUrl });
    assert.equal(decision.mode, "fail_open");
    assert.match(decision.error, /could not be reached/);
  });

  test("a 503 follows onError", async () => {
    const open = await checkRateLimit({ ...VALID, url: failingUrl });
    const closed = await checkRateLimit({ ...VALID, url: failingUrl, onError: "closed" });
    assert.equal(open.allowed, true);
    assert.match(open.error, /returned 503/);
    assert.equal(closed.allowed, false);
  });
});
