// Entry point of the console: loads every section, then refreshes them every few seconds.

import { apiGet } from "./api.js";
import { refreshAppeals, setAppealChangeHandler, setUpAppeals } from "./appeals.js";
import { renderFlags, setFlagChangeHandler, tickBakeClocks } from "./flags.js";
import { refreshPolicies, setPolicyChangeHandler, setUpPolicyForm } from "./policies.js";
import { refreshBlocks, refreshChanges } from "./reports.js";
import { renderRollout, setRolloutChangeHandler, setUpRollout } from "./rollout.js";
import { lockChangeControls, setSectionError } from "./session.js";
import { refreshTraffic } from "./traffic.js";
import { refreshTrust, setTrustChangeHandler, setUpTrustForm } from "./trust.js";

const REFRESH_INTERVAL_MS = 5000;
const state = { flags: [], rollouts: new Map() };

async function refreshFlagsAndRollouts() {
  const [flags, rollouts] = await Promise.allSettled([apiGet("/v1/flags"), apiGet("/v1/rollouts")]);
  if (flags.status === "rejected") throw flags.reason;
  state.flags = flags.value;
  if (rollouts.status === "fulfilled") {
    state.rollouts = new Map(rollouts.value.map((rollout) => [rollout.flag, rollout]));
    setSectionError("rollout", null);
  } else {
    setSectionError("rollout", rollouts.reason);
  }
  renderFlags(state.flags, state.rollouts);
  renderRollout(state.flags.map((flag) => flag.name), state.rollouts);
}

// Each section loads on its own, so one failing endpoint leaves the others live.
const SECTIONS = [
  ["flags", refreshFlagsAndRollouts],
  ["traffic", refreshTraffic],
  ["blocks", refreshBlocks],
  ["policies", refreshPolicies],
  ["trust", refreshTrust],
  ["appeals", refreshAppeals],
  ["changes", refreshChanges],
];

let running = null;
let again = false;

async function refreshOnce() {
  const results = await Promise.allSettled(SECTIONS.map(([, load]) => load()));
  const failures = [];
  results.forEach((result, index) => {
    const [section] = SECTIONS[index];
    setSectionError(section, result.status === "rejected" ? result.reason : null);
    if (result.status === "rejected") failures.push(section);
  });

  const status = document.getElementById("refresh-status");
  const time = new Date().toLocaleTimeString(undefined, { hourCycle: "h23" });
  status.textContent = failures.length ? `Updated ${time}; failed: ${failures.join(", ")}` : `Updated ${time}`;
  status.dataset.failed = String(failures.length > 0);
  document.body.dataset.refreshedAt = new Date().toISOString();
  document.body.dataset.refreshCount = String(Number(document.body.dataset.refreshCount ?? 0) + 1);
}

/** Reload every section; a call during a reload runs one more reload after it. */
export async function refreshAll() {
  if (running) {
    again = true;
    return running;
  }
  running = (async () => {
    do {
      again = false;
      await refreshOnce();
    } while (again);
  })();
  try {
    await running;
  } finally {
    running = null;
  }
}

function start() {
  lockChangeControls(document);
  for (const setHandler of [setFlagChangeHandler, setRolloutChangeHandler, setPolicyChangeHandler, setTrustChangeHandler, setAppealChangeHandler]) {
    setHandler(refreshAll);
  }
  setUpRollout(() => renderRollout(state.flags.map((flag) => flag.name), state.rollouts));
  setUpPolicyForm();
  setUpTrustForm();
  setUpAppeals();

  refreshAll();
  setInterval(() => {
    if (!document.hidden) refreshAll();
  }, REFRESH_INTERVAL_MS);
  setInterval(tickBakeClocks, 1000);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) refreshAll();
  });
}

start();
