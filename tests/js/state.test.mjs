// Unit tests of the portal's pure logic (daemon/vizdesk/static/state.js).
// Run: node --test tests/js/
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import {
  buildLaunchRequest,
  canOpen,
  canStop,
  createSseParser,
  describeError,
  disconnectMessage,
  fitGeometry,
  formatDuration,
  healthBanner,
  jwtClaims,
  launchFormModel,
  mergeSessionList,
  normalizeToken,
  parseRetryAfter,
  progressText,
  sortSessions,
  sseEventToAction,
  startSteps,
  timeLeftLevel,
  timeLeftSeconds,
  timeLeftText,
  tokenFromFragment,
  tokenSecondsLeft,
  upsertSession,
  websocketUrl,
} from "../../daemon/vizdesk/static/state.js";

const T0 = Date.parse("2025-01-01T10:00:00Z");
const iso = (ms) => new Date(ms).toISOString();

function session(over = {}) {
  return {
    id: "abc123def4567890",
    user: "alice",
    state: "PENDING",
    reason: "",
    job_id: null,
    node: null,
    image: null,
    partition: "viz",
    cpus: 2,
    memory_gb: 4,
    gpus: 0,
    time_limit_minutes: 60,
    geometry: "1280x800",
    created_at: iso(T0),
    started_at: null,
    ready_at: null,
    ended_at: null,
    ...over,
  };
}

function b64url(obj) {
  return Buffer.from(JSON.stringify(obj)).toString("base64url");
}

function jwt(claims) {
  return `${b64url({ alg: "HS256", typ: "JWT" })}.${b64url(claims)}.c2lnbmF0dXJl`;
}

function feedAll(parser, chunks) {
  const out = [];
  for (const c of chunks) out.push(...parser.push(c));
  out.push(...parser.end());
  return out;
}

describe("SSE parser", () => {
  const stream =
    ": keep-alive\n\n" +
    'event: session\ndata: {"id":"s1","state":"PENDING"}\n\n' +
    "event: status\r\ndata: {\"slurm\":\"unreachable\"}\r\n\r\n" +
    "id: 7\nevent: session\ndata: {\"id\":\"s1\",\ndata: \"state\":\"READY\"}\n\n";

  it("parses a whole stream", () => {
    const events = feedAll(createSseParser(), [stream]);
    assert.deepEqual(
      events.map((e) => [e.event, e.data]),
      [
        ["session", '{"id":"s1","state":"PENDING"}'],
        ["status", '{"slurm":"unreachable"}'],
        ["session", '{"id":"s1",\n"state":"READY"}'],
      ],
    );
    assert.equal(events[2].id, "7");
  });

  it("gives the same events for every split into two chunks", () => {
    const whole = feedAll(createSseParser(), [stream]);
    for (let i = 0; i <= stream.length; i++) {
      const split = feedAll(createSseParser(), [stream.slice(0, i), stream.slice(i)]);
      assert.deepEqual(split, whole, `split at ${i}`);
    }
  });

  it("gives the same events when fed one character at a time", () => {
    const whole = feedAll(createSseParser(), [stream]);
    assert.deepEqual(feedAll(createSseParser(), [...stream]), whole);
  });

  it("treats CRLF split across chunks as one line break (no phantom empty line)", () => {
    const p = createSseParser();
    assert.deepEqual(p.push("data: a\r"), []);
    assert.deepEqual(p.push("\ndata: b\r"), []);
    const events = p.push("\n\r\n");
    assert.deepEqual(
      events.map((e) => e.data),
      ["a\nb"],
    );
  });

  it("accepts lone CR line endings", () => {
    const events = feedAll(createSseParser(), ["event: x\rdata: 1\r\r"]);
    assert.deepEqual(events.map((e) => [e.event, e.data]), [["x", "1"]]);
  });

  it("decodes UTF-8 split inside a multi-byte character", () => {
    const bytes = new TextEncoder().encode('event: session\ndata: {"reason":"Priorität ✓"}\n\n');
    const euro = bytes.indexOf(0xc3); // first byte of "ä"
    const p = createSseParser();
    const out = [...p.push(bytes.slice(0, euro + 1)), ...p.push(bytes.slice(euro + 1))];
    assert.equal(out.length, 1);
    assert.equal(JSON.parse(out[0].data).reason, "Priorität ✓");
  });

  it("ignores comments, unknown fields, and drops an unterminated event at end", () => {
    const events = feedAll(createSseParser(), [":hello\nfoo: bar\ndata: ok\n\ndata: cut off"]);
    assert.deepEqual(events.map((e) => e.data), ["ok"]);
  });

  it("removes only one leading space, keeps values with colons, defaults to message", () => {
    const events = feedAll(createSseParser(), ["data:  two spaces: yes\n\ndata\n\n"]);
    assert.deepEqual(events.map((e) => [e.event, e.data]), [
      ["message", " two spaces: yes"],
      ["message", ""],
    ]);
  });

  it("skips a leading BOM and reads retry", () => {
    const events = feedAll(createSseParser(), ["\ufeffretry: 3000\ndata: x\n\n"]);
    assert.equal(events[0].retry, 3000);
    assert.equal(events[0].data, "x");
  });
});

describe("SSE event → action", () => {
  it("maps session and status events", () => {
    assert.deepEqual(sseEventToAction({ event: "session", data: '{"id":"s","state":"READY"}' }), {
      type: "session",
      session: { id: "s", state: "READY" },
    });
    assert.deepEqual(sseEventToAction({ event: "status", data: '{"slurm":"unreachable"}' }), {
      type: "status",
      slurm: "unreachable",
    });
    assert.deepEqual(sseEventToAction({ event: "status", data: '{"slurm":"ok"}' }), { type: "status", slurm: "ok" });
  });

  it("ignores malformed and unknown events", () => {
    assert.equal(sseEventToAction({ event: "session", data: "not json" }), null);
    assert.equal(sseEventToAction({ event: "session", data: '{"state":"READY"}' }), null);
    assert.equal(sseEventToAction({ event: "other", data: "{}" }), null);
    assert.equal(sseEventToAction({ event: "session", data: "null" }), null);
  });
});

describe("session collection", () => {
  it("upserts and keeps final states sticky", () => {
    let m = new Map();
    m = upsertSession(m, session({ state: "PENDING" }));
    m = upsertSession(m, session({ state: "READY", node: "n1" }));
    assert.equal(m.get("abc123def4567890").state, "READY");
    m = upsertSession(m, session({ state: "ENDED" }));
    const stale = upsertSession(m, session({ state: "READY" }));
    assert.equal(stale.get("abc123def4567890").state, "ENDED");
  });

  it("does not mutate the input map", () => {
    const m = new Map();
    upsertSession(m, session());
    assert.equal(m.size, 0);
  });

  it("merges a list: stale active does not override known final; new active kept", () => {
    let m = new Map();
    m = upsertSession(m, session({ id: "a", state: "ENDED" }));
    m = upsertSession(m, session({ id: "new", state: "PENDING" }));
    m = upsertSession(m, session({ id: "gone", state: "ENDED" }));
    const out = mergeSessionList(m, [session({ id: "a", state: "READY" }), session({ id: "b", state: "READY" })]);
    assert.equal(out.get("a").state, "ENDED");
    assert.equal(out.get("b").state, "READY");
    assert.ok(out.has("new"));
    assert.ok(!out.has("gone"));
  });

  it("sorts active first (newest first), then ended by end time", () => {
    const list = [
      session({ id: "old-ended", state: "ENDED", created_at: iso(T0), ended_at: iso(T0 + 1000) }),
      session({ id: "old-ready", state: "READY", created_at: iso(T0) }),
      session({ id: "new-pending", state: "PENDING", created_at: iso(T0 + 5000) }),
      session({ id: "new-ended", state: "FAILED", created_at: iso(T0), ended_at: iso(T0 + 9000) }),
    ];
    assert.deepEqual(
      sortSessions(list).map((s) => s.id),
      ["new-pending", "old-ready", "new-ended", "old-ended"],
    );
  });

  it("open and stop are offered in the right states", () => {
    assert.equal(canOpen(session({ state: "READY" })), true);
    assert.equal(canOpen(session({ state: "STARTING" })), false);
    for (const st of ["PENDING", "STARTING", "READY"]) assert.equal(canStop(session({ state: st })), true);
    for (const st of ["STOPPING", "ENDED", "FAILED"]) assert.equal(canStop(session({ state: st })), false);
  });
});

describe("durations and time left", () => {
  it("formats durations", () => {
    assert.equal(formatDuration(0), "0 s");
    assert.equal(formatDuration(45.9), "45 s");
    assert.equal(formatDuration(60), "1 min 00 s");
    assert.equal(formatDuration(185), "3 min 05 s");
    assert.equal(formatDuration(3600), "1 h 00 min");
    assert.equal(formatDuration(2 * 3600 + 7 * 60 + 59), "2 h 07 min");
    assert.equal(formatDuration(3 * 86400 + 4 * 3600), "3 d 04 h");
    assert.equal(formatDuration(-5), "0 s");
    assert.equal(formatDuration(null), "");
  });

  it("counts the time limit from the job's start", () => {
    const s = session({ state: "READY", started_at: iso(T0), time_limit_minutes: 60 });
    assert.equal(timeLeftSeconds(s, T0 + 15 * 60000), 45 * 60);
    assert.equal(timeLeftText(s, T0 + 15 * 60000), "45 min 00 s left");
    assert.equal(timeLeftSeconds(s, T0 + 61 * 60000), 0);
  });

  it("has no countdown before start or after the end", () => {
    assert.equal(timeLeftSeconds(session({ state: "PENDING" }), T0), null);
    assert.equal(timeLeftText(session({ state: "PENDING", time_limit_minutes: 90 }), T0), "time limit 1 h 30 min");
    const ended = session({ state: "ENDED", started_at: iso(T0) });
    assert.equal(timeLeftSeconds(ended, T0 + 1000), null);
    assert.equal(timeLeftText(ended, T0 + 1000), "");
  });

  it("warns when little time is left", () => {
    assert.equal(timeLeftLevel(null), "ok");
    assert.equal(timeLeftLevel(3600), "ok");
    assert.equal(timeLeftLevel(599), "soon");
    assert.equal(timeLeftLevel(119), "critical");
  });
});

describe("start-up steps", () => {
  it("queued: shows Slurm's reason and the elapsed time", () => {
    const s = session({ state: "PENDING", reason: "Resources", job_id: "42" });
    const { steps, elapsedSeconds } = startSteps(s, T0 + 12000);
    assert.deepEqual(
      steps.map((x) => x.status),
      ["active", "todo", "todo"],
    );
    assert.match(steps[0].detail, /Slurm: Resources/);
    assert.match(steps[0].detail, /job 42/);
    assert.equal(steps[0].seconds, 12);
    assert.equal(elapsedSeconds, 12);
    assert.equal(progressText(s, T0 + 12000), "Queued in Slurm — Slurm: Resources (job 42) (12 s elapsed)");
  });

  it("starting: names the node, queue time done", () => {
    const s = session({ state: "STARTING", node: "viz01", started_at: iso(T0 + 2000) });
    const { steps, elapsedSeconds } = startSteps(s, T0 + 5000);
    assert.deepEqual(
      steps.map((x) => x.status),
      ["done", "active", "todo"],
    );
    assert.equal(steps[1].label, "Starting on node viz01");
    assert.equal(steps[0].seconds, 2);
    assert.equal(steps[1].seconds, 3);
    assert.equal(elapsedSeconds, 5);
  });

  it("ready: all done, elapsed stops at ready_at", () => {
    const s = session({ state: "READY", node: "viz01", started_at: iso(T0 + 1000), ready_at: iso(T0 + 4000) });
    const { steps, elapsedSeconds } = startSteps(s, T0 + 60000);
    assert.deepEqual(
      steps.map((x) => x.status),
      ["done", "done", "done"],
    );
    assert.equal(elapsedSeconds, 4);
  });

  it("failed while starting: the failing step carries the reason", () => {
    const s = session({
      state: "FAILED",
      reason: "VNC server did not start",
      started_at: iso(T0 + 1000),
      ended_at: iso(T0 + 31000),
    });
    const { steps } = startSteps(s, T0 + 99000);
    assert.deepEqual(
      steps.map((x) => x.status),
      ["done", "failed", "todo"],
    );
    assert.equal(steps[1].detail, "VNC server did not start");
    assert.equal(steps[1].seconds, 30);
  });

  it("requeued (STARTING → PENDING) shows queued again", () => {
    const s = session({ state: "PENDING", reason: "BeginTime", started_at: null });
    assert.equal(startSteps(s, T0).phase, 0);
  });
});

describe("errors a person can act on", () => {
  it("401 → sign in again, expired named", () => {
    const e = describeError(401, { error: { code: "token_expired", message: "token expired" } });
    assert.equal(e.kind, "auth");
    assert.equal(e.signIn, true);
    assert.match(e.message, /expired/);
    const e2 = describeError(401, { error: { code: "unauthorized", message: "bad signature" } });
    assert.equal(e2.signIn, true);
    assert.match(e2.message, /bad signature/);
  });

  it("403 policy_violation → the limit is named", () => {
    const e = describeError(403, {
      error: { code: "policy_violation", message: "max_gpus is 1 for your groups", field: "gpus" },
    });
    assert.equal(e.kind, "policy");
    assert.equal(e.signIn, false);
    assert.equal(e.field, "gpus");
    assert.match(e.message, /max_gpus is 1 for your groups/);
  });

  it("429 → Retry-After shown", () => {
    const e = describeError(429, { error: { code: "rate_limited", message: "slow down" } }, "42");
    assert.equal(e.kind, "rate");
    assert.equal(e.retryAfter, 42);
    assert.match(e.message, /42 s/);
    const noHeader = describeError(429, null, null);
    assert.equal(noHeader.retryAfter, null);
    assert.match(noHeader.message, /shortly/);
  });

  it("parses Retry-After as seconds or HTTP date", () => {
    assert.equal(parseRetryAfter("7"), 7);
    assert.equal(parseRetryAfter(new Date(T0 + 30000).toUTCString(), T0), 30);
    assert.equal(parseRetryAfter("soon"), null);
    assert.equal(parseRetryAfter(null), null);
  });

  it("400 names the field, 409 not ready, network, 5xx without stack traces", () => {
    const v = describeError(400, { error: { code: "invalid", message: "must be 1..64", field: "cpus" } });
    assert.equal(v.kind, "validation");
    assert.match(v.message, /\(cpus\): must be 1\.\.64/);
    assert.equal(describeError(409, { error: { code: "not_ready", message: "session is PENDING" } }).kind, "conflict");
    assert.equal(describeError(0, null).kind, "network");
    const s = describeError(500, "<html>Traceback</html>");
    assert.equal(s.kind, "server");
    assert.doesNotMatch(s.message, /Traceback/);
    assert.equal(describeError(503, null).kind, "unavailable");
  });

  it("health banner: scheduler unreachable keeps desktops running", () => {
    assert.equal(healthBanner({ slurm: true, redis: true }), null);
    assert.match(healthBanner({ slurm: false, redis: true }).message, /scheduler.*unreachable.*desktops keep running/is);
    assert.match(healthBanner({ slurm: "unreachable" }).message, /keep running/);
    assert.equal(healthBanner({ reachable: false }).level, "error");
    assert.equal(healthBanner({ slurm: true, redis: false }).level, "error");
  });
});

describe("sign-in token", () => {
  const token = jwt({ sub: "alice", exp: T0 / 1000 + 600, groups: ["viz"] });

  it("reads #token= from the fragment and keeps other parts", () => {
    assert.deepEqual(tokenFromFragment(`#token=${token}`), { token, rest: "" });
    assert.deepEqual(tokenFromFragment(`#x=1&token=${encodeURIComponent(token)}&y=2`), { token, rest: "#x=1&y=2" });
    assert.deepEqual(tokenFromFragment("#nothing"), { token: null, rest: "#nothing" });
    assert.deepEqual(tokenFromFragment(""), { token: null, rest: "" });
  });

  it("decodes claims without verifying and normalizes pasted text", () => {
    assert.equal(jwtClaims(token).sub, "alice");
    assert.equal(jwtClaims("not.a.jwt"), null);
    assert.equal(jwtClaims("abc"), null);
    assert.equal(normalizeToken(`  Bearer ${token.slice(0, 20)}\n${token.slice(20)}  `), token);
    assert.equal(normalizeToken("hello"), null);
  });

  it("computes seconds left before exp", () => {
    assert.equal(tokenSecondsLeft(token, T0), 600);
    assert.ok(tokenSecondsLeft(token, T0 + 700000) < 0);
    assert.equal(tokenSecondsLeft(jwt({ sub: "x" }), T0), null);
  });
});

describe("launch form", () => {
  const policy = {
    partitions: ["viz", "debug"],
    images: ["xfce", "paraview"],
    max_gpus: 2,
    max_cpus: 8,
    max_memory_gb: 32,
    max_time_limit_minutes: 480,
    max_sessions: 2,
  };
  const catalog = [
    { id: "compute-py", name: "compute-py", kind: "compute", description: "" },
    { id: "xfce", name: "XFCE desktop", kind: "viz", description: "plain desktop" },
    { id: "paraview", name: "ParaView", kind: "viz", description: "" },
  ];

  it("fills limits and offers only allowed images and partitions", () => {
    const m = launchFormModel(policy, catalog);
    assert.deepEqual(m.partitions, ["viz", "debug"]);
    assert.deepEqual(
      m.images.map((i) => i.value),
      ["paraview", "xfce"],
    );
    assert.equal(m.cpus.max, 8);
    assert.equal(m.gpus.max, 2);
    assert.equal(m.time_limit_minutes.value, 60);
    assert.equal(m.max_sessions, 2);
  });

  it("'*' means any partition (free field) and every catalog image; no catalog → no choice", () => {
    const m = launchFormModel({ ...policy, partitions: ["*"], images: ["*"] }, catalog);
    assert.equal(m.partitions, null);
    assert.equal(m.images.length, 3);
    assert.equal(m.images[0].kind, "viz");
    assert.equal(launchFormModel(policy, null).images, null);
  });

  it("builds a request and rejects values outside the policy", () => {
    const m = launchFormModel(policy, catalog);
    const ok = buildLaunchRequest(
      { cpus: "4", memory_gb: "8", gpus: "1", time_limit_minutes: "120", partition: "viz", image: "xfce", geometry: "1600x900" },
      m,
    );
    assert.deepEqual(ok.errors, {});
    assert.deepEqual(ok.body, {
      cpus: 4,
      memory_gb: 8,
      gpus: 1,
      time_limit_minutes: 120,
      partition: "viz",
      image: "xfce",
      geometry: "1600x900",
    });
    const bad = buildLaunchRequest({ cpus: "9", gpus: "1.5", partition: "gpu", image: "compute-py", geometry: "big" }, m);
    assert.deepEqual(Object.keys(bad.errors).sort(), ["cpus", "geometry", "gpus", "image", "partition"]);
    assert.match(bad.errors.cpus, /between 1 and 8/);
  });

  it("starts from the daemon's defaults, clamped to the policy, and its default partition", () => {
    const m = launchFormModel(policy, null, { cpus: 1, memory_gb: 64, gpus: 0, time_limit_minutes: 30 }, "debug");
    assert.equal(m.cpus.value, 1);
    assert.equal(m.memory_gb.value, 32);
    assert.equal(m.time_limit_minutes.value, 30);
    assert.equal(m.partition, "debug");
    assert.equal(launchFormModel(policy, null, null, "nope").partition, "viz");
    assert.equal(launchFormModel(policy, null).cpus.value, 2);
  });

  it("leaves empty fields out so the daemon's defaults apply", () => {
    const m = launchFormModel({ ...policy, partitions: ["*"] }, null);
    assert.deepEqual(buildLaunchRequest({ cpus: "", partition: " ", image: "" }, m), { body: {}, errors: {} });
  });

  it("fits the geometry to the window", () => {
    assert.equal(fitGeometry(1535, 777), "1534x776");
    assert.equal(fitGeometry(300, 200), "640x480");
    assert.equal(fitGeometry(10000, 9000, 3840, 2160), "3840x2160");
  });
});

describe("desktop connection", () => {
  it("builds ws/wss URLs on the page's host", () => {
    assert.equal(
      websocketUrl({ protocol: "https:", host: "viz.example.org" }, "/api/v1/sessions/s1/vnc?ticket=t"),
      "wss://viz.example.org/api/v1/sessions/s1/vnc?ticket=t",
    );
    assert.equal(websocketUrl({ protocol: "http:", host: "127.0.0.1:8080" }, "api/x?ticket=1"), "ws://127.0.0.1:8080/api/x?ticket=1");
  });

  it("explains a dropped connection and offers reconnect only while the desktop runs", () => {
    const running = session({ state: "READY" });
    const drop = disconnectMessage({ session: running, clean: false, userAsked: false });
    assert.equal(drop.canReconnect, true);
    assert.match(drop.message, /dropped.*keeps running/);
    const ended = disconnectMessage({ session: session({ state: "ENDED", reason: "time limit reached" }), clean: true });
    assert.equal(ended.canReconnect, false);
    assert.match(ended.message, /ended: time limit reached/);
    assert.equal(disconnectMessage({ session: running, userAsked: true }).canReconnect, true);
    assert.match(disconnectMessage({ session: running, securityFailure: "bad ticket" }).message, /bad ticket/);
  });

  it("says when the automatic reconnect gave up, and offers Reconnect", () => {
    const running = session({ state: "READY" });
    const gaveUp = disconnectMessage({ session: running, clean: false, userAsked: false, gaveUp: true });
    assert.equal(gaveUp.canReconnect, true);
    assert.match(gaveUp.message, /could not be restored for 2 minutes/);
    assert.match(gaveUp.message, /Reconnect/);
    // a session that ended meanwhile says so instead
    const ended = disconnectMessage({ session: session({ state: "ENDED" }), gaveUp: true });
    assert.equal(ended.canReconnect, false);
    assert.match(ended.message, /ended/);
  });
});
