// checkRateLimit and rateLimitResponse against a real `rampgate serve`.
//
// The pytest wrapper (tests/e2e/test_js_module.py) starts the server and
// passes RAMPGATE_TEST_URL, RAMPGATE_TEST_SERVICE_TOKEN,
// RAMPGATE_TEST_ADMIN_TOKEN and RAMPGATE_TEST_JWT_SECRET. Without
// RAMPGATE_TEST_URL this file starts a server itself with the `rampgate`
// command: RAMPGATE_BIN, else the repository's .venv/bin/rampgate, else PATH.
// Its fresh SQLite catalog is set up the same way. Enforcement is at 100 %,
// `follow` at 0 % (shadow mode), and user:u-suspended at level E5.
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { createHmac, randomUUID } from "node:crypto";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

import { RampgateError, blockedMessage, checkRateLimit, rateLimitHeaders, rateLimitResponse } from "../rampgate.mjs";

const SUSPENDED_ACTOR = "u-suspended";
const SHADOW_ACTION = "follow";
const READY_TIMEOUT_MS = 30_000;

const service = {
  url: process.env.RAMPGATE_TEST_URL,
  token: process.env.RAMPGATE_TEST_SERVICE_TOKEN,
  adminToken: process.env.RAMPGATE_TEST_ADMIN_TOKEN,
  jwtSecret: process.env.RAMPGATE_TEST_JWT_SECRET,
};
let serverProcess;
let serverDirectory;

function rampgateCommand() {
  if (process.env.RAMPGATE_BIN) return process.env.RAMPGATE_BIN;
  const beside = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../.venv/bin/rampgate");
  return existsSync(beside) ? beside : "rampgate";
}

function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.on("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/** Start `rampgate serve` on a fresh catalog and wait until /readyz returns 200. */
async function startServer() {
  serverDirectory = mkdtempSync(path.join(tmpdir(), "rampgate-js-"));
  const env = {
    ...process.env,
    RAMPGATE_DATABASE_URL: `sqlite:///${path.join(serverDirectory, "catalog.db")}`,
    RAMPGATE_COUNTER_STORE: "memory",
    RAMPGATE_SERVICE_TOKEN: "service-token-for-js-tests",
    RAMPGATE_ADMIN_TOKEN: "admin-token-for-js-tests",
    RAMPGATE_JWT_SECRET: "jwt-secret-for-js-tests-0123456789abcdef",
  };
  const command = rampgateCommand();
  const run = (...args) => execFileSync(command, args, { env, stdio: ["ignore", "ignore", "pipe"] });
  run("migrate");
  run("flag", "set", "rate_limit_enforcement", "--enabled", "--percentage", "100", "--action-percentage", `${SHADOW_ACTION}=0`);
  run("trust", "set", "--actor", `user:${SUSPENDED_ACTOR}`, "--tier", "B", "--level", "E5");

  const port = await freePort();
  serverProcess = spawn(command, ["serve", "--host", "127.0.0.1", "--port", String(port)], {
    env,
    stdio: ["ignore", "ignore", "inherit"],
  });
  Object.assign(service, {
    url: `http://127.0.0.1:${port}`,
    token: env.RAMPGATE_SERVICE_TOKEN,
    adminToken: env.RAMPGATE_ADMIN_TOKEN,
    jwtSecret: env.RAMPGATE_JWT_SECRET,
  });

  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (serverProcess.exitCode !== null) throw new Error(`rampgate serve exited with status ${serverProcess.exitCode}`);
    try {
      if ((await fetch(`${service.url}/readyz`)).status === 200) return;
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`rampgate serve was not ready within ${READY_TIMEOUT_MS} ms`);
}

function newActor() {
  return `u-${randomUUID().slice(0, 12)}`;
}

function check(options) {
  return checkRateLimit({ url: service.url, token: service.token, actorType: "user", timeoutMs: 10_000, ...options });
}

async function checkTimes(count, options) {
  const decisions = [];
  for (let i = 0; i < count; i += 1) decisions.push(await check(options));
  return decisions;
}

/** Sign an HS256 JWT for the service's protected example endpoints. */
function endUserToken(actorId) {
  const encode = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const unsigned = `${encode({ alg: "HS256", typ: "JWT" })}.${encode({ sub: actorId, exp: Math.floor(Date.now() / 1000) + 3600 })}`;
  const signature = createHmac("sha256", service.jwtSecret).update(unsigned).digest("base64url");
  return `${unsigned}.${signature}`;
}

before(async () => {
  if (!service.url) await startServer();
});

after(() => {
  if (serverProcess && serverProcess.exitCode === null) serverProcess.kill("SIGTERM");
  if (serverDirectory) rmSync(serverDirectory, { recursive: true, force: true });
});

describe("checkRateLimit against rampgate serve", () => {
  test("an allowed decision carries the policy and the RateLimit headers", async () => {
    const decision = await check({ actorId: newActor(), action: "media_upload" });

    assert.equal(decision.allowed, true);
    assert.equal(decision.mode, "enforce");
    assert.equal(decision.policy, "tier:B:media_upload");
    assert.equal(decision.remaining, 4);
    assert.equal(decision.language, "en");
    assert.deepEqual(rateLimitHeaders(decision), {
      "RateLimit-Policy": '"B.media_upload";q=5;w=60',
      RateLimit: '"B.media_upload";r=4;t=12',
    });
  });

  test("the sixth upload is blocked and becomes the service's 429", async () => {
    const decisions = await checkTimes(6, { actorId: newActor(), action: "media_upload" });
    assert.deepEqual(decisions.map((d) => d.allowed), [true, true, true, true, true, false]);

    // At most 12 s, the refill time of one unit; less when the six calls took a while.
    const blocked = decisions[5];
    assert.ok(blocked.retry_after > 0, `retry_after ${blocked.retry_after}`);
    assert.ok(blocked.retry_after <= 12, `retry_after ${blocked.retry_after}`);
    const seconds = Math.ceil(blocked.retry_after);
    const response = rateLimitResponse(blocked);
    assert.equal(response.status, 429);
    assert.equal(response.headers.get("Retry-After"), String(seconds));
    assert.equal(response.headers.get("RateLimit"), `"B.media_upload";r=0;t=${seconds}`);
    assert.deepEqual(await response.json(), {
      error: "rate_limited",
      action: "media_upload",
      tier: "B",
      retryAfter: seconds,
      limit: 5,
      windowSeconds: 60,
      message: blocked.message,
    });
  });

  test("the 429 equals the one the service's protected endpoint sends", async () => {
    const serviceResponse = await fetch(`${service.url}/v1/media/upload-authorize`, {
      method: "POST",
      headers: { Authorization: `Bearer ${endUserToken(SUSPENDED_ACTOR)}`, "Content-Type": "application/json", "Accept-Language": "ru" },
      body: "{}",
    });
    const decision = await check({ actorId: SUSPENDED_ACTOR, action: "media_upload", acceptLanguage: "ru" });
    const ours = rateLimitResponse(decision);

    assert.equal(serviceResponse.status, 429);
    assert.equal(ours.status, serviceResponse.status);
    for (const name of ["Retry-After", "RateLimit-Policy", "RateLimit", "Content-Type"]) {
      assert.equal(ours.headers.get(name), serviceResponse.headers.get(name), name);
    }
    assert.deepEqual(await ours.json(), await serviceResponse.json());
  });

  test("Accept-Language is passed through, so the message is Russian", async () => {
    const decisions = await checkTimes(6, { actorId: newActor(), action: "media_upload", acceptLanguage: "ru-RU,ru;q=0.9" });
    const blocked = decisions[5];

    assert.equal(blocked.language, "ru");
    assert.match(blocked.message, /^Слишком много запросов\. Повторите попытку через \d+ секунд/);
    const body = await rateLimitResponse(blocked).json();
    assert.equal(body.message, blocked.message);
  });

  test("local messages match the service's for every blocking reason", async () => {
    for (const language of ["en", "ru"]) {
      const actorId = newActor();
      const limited = (await checkTimes(6, { actorId, action: "media_upload", acceptLanguage: language }))[5];
      const tooLarge = await check({ actorId, action: "media_upload", cost: 6, acceptLanguage: language });
      const suspended = await check({ actorId: SUSPENDED_ACTOR, action: "create_post", acceptLanguage: language });

      for (const decision of [limited, tooLarge, suspended]) {
        assert.equal(decision.allowed, false);
        assert.equal(blockedMessage(decision.reason, decision.retry_after, language), decision.message);
      }
    }
  });

  test("a request over capacity gets a 429 without Retry-After", async () => {
    const decision = await check({ actorId: newActor(), action: "media_upload", cost: 6 });
    const response = rateLimitResponse(decision);
    const body = await response.json();

    assert.equal(decision.reason, "exceeds_capacity");
    assert.equal(decision.retry_after, null);
    assert.equal(response.headers.get("Retry-After"), null);
    assert.equal(response.headers.get("RateLimit"), '"B.media_upload";r=5');
    assert.equal(body.retryAfter, null);
  });

  test("a suspended actor is blocked for an hour", async () => {
    const decision = await check({ actorId: SUSPENDED_ACTOR, action: "send_message" });
    const response = rateLimitResponse(decision);

    assert.equal(decision.reason, "suspended");
    assert.equal(response.headers.get("Retry-After"), "3600");
  });

  test("shadow mode allows every request and sends no RateLimit headers", async () => {
    const decisions = await checkTimes(16, { actorId: newActor(), action: SHADOW_ACTION });

    assert.ok(decisions.every((d) => d.allowed && d.mode === "shadow"));
    assert.equal(decisions[14].would_block, false);
    assert.equal(decisions[15].would_block, true);
    assert.deepEqual(rateLimitHeaders(decisions[15]), {});
  });

  test("the request id and context reach the audit trail", async () => {
    const actorId = newActor();
    const requestId = `req-${randomUUID().slice(0, 8)}`;
    await checkTimes(5, { actorId, action: "media_upload" });
    const blocked = await check({ actorId, action: "media_upload", requestId, context: { screen: "upload" } });
    assert.equal(blocked.allowed, false);

    let rows = [];
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      const response = await fetch(`${service.url}/v1/reports/recent?limit=100`, {
        headers: { Authorization: `Bearer ${service.adminToken}` },
      });
      rows = (await response.json()).filter((row) => row.request_id === requestId);
      if (rows.length > 0) break;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    assert.equal(rows.length, 1);
    assert.equal(rows[0].actor_id, actorId);
  });

  test("the service URL may end in a slash or in /v1/check", async () => {
    const withSlash = await check({ url: `${service.url}/`, actorId: newActor(), action: "search" });
    const withPath = await check({ url: `${service.url}/v1/check`, actorId: newActor(), action: "search" });

    assert.equal(withSlash.mode, "enforce");
    assert.equal(withPath.mode, "enforce");
  });

  test("a wrong token rejects even with onError open", async () => {
    await assert.rejects(check({ token: "wrong-token", actorId: newActor(), action: "search", onError: "open" }), (error) => {
      assert.ok(error instanceof RampgateError);
      assert.equal(error.status, 401);
      assert.doesNotMatch(error.message, /wrong-token/);
      return true;
    });
  });

  test("a 404 from a wrong URL rejects even with onError open", async () => {
    await assert.rejects(check({ url: `${service.url}/no-such-prefix`, actorId: newActor(), action: "search" }), (error) => {
      assert.ok(error instanceof RampgateError);
      assert.equal(error.status, 404);
      return true;
    });
  });

  test("a context the service cannot store rejects with the field", async () => {
    const context = { blob: "x".repeat(10_000) };
    await assert.rejects(check({ actorId: newActor(), action: "search", context }), (error) => {
      assert.equal(error.status, 422);
      assert.equal(error.field, "context");
      return true;
    });
  });
});
