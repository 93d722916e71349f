// Unit tests of the portal's awareness and sharing logic (awareness.js) and of the new
// events of the stream (state.js): node --test tests/js/
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import {
  canKick,
  estimateText,
  extendStepMinutes,
  shareActive,
  shareIdFromSearch,
  shareSummary,
  shareUrl,
  sharedTitle,
  viewerEventText,
  viewerLine,
  warningBanner,
} from "../../daemon/vizdesk/static/awareness.js";
import { sseEventToAction, startSteps, timeLeftSeconds } from "../../daemon/vizdesk/static/state.js";

const T0 = Date.parse("2026-01-01T10:00:00Z");
const SID = "0123456789abcdef0123456789abcdef";

describe("events of the stream for owners", () => {
  it("maps viewer, idle_warning and walltime_warning", () => {
    assert.deepEqual(sseEventToAction({ event: "viewer", data: `{"session_id":"s","event":"join","user":"bob"}` }), {
      type: "viewer",
      viewer: { session_id: "s", event: "join", user: "bob" },
    });
    assert.deepEqual(sseEventToAction({ event: "idle_warning", data: '{"session_id":"s","idle_seconds":15}' }), {
      type: "warning",
      kind: "idle",
      warning: { session_id: "s", idle_seconds: 15 },
    });
    assert.equal(sseEventToAction({ event: "walltime_warning", data: '{"session_id":"s"}' }).kind, "walltime");
    assert.equal(sseEventToAction({ event: "viewer", data: '{"event":"join"}' }), null);
    assert.equal(sseEventToAction({ event: "idle_warning", data: "{}" }), null);
  });
});

describe("warning banners", () => {
  it("an idle warning offers to keep the desktop and says when it ends", () => {
    const b = warningBanner("idle", { session_id: "s", idle_seconds: 900, ends_in_seconds: 300 }, "Desktop ab");
    assert.equal(b.key, "idle:s");
    assert.equal(b.action, "keep");
    assert.match(b.text, /no keyboard or mouse input for 15 min 00 s/);
    assert.match(b.text, /stopped in 5 min 00 s/);
    const noEnd = warningBanner("idle", { session_id: "s", idle_seconds: 60, ends_in_seconds: null }, "D");
    assert.doesNotMatch(noEnd.text, /stopped/);
  });

  it("a walltime warning offers extend only when policy allows", () => {
    const w = { session_id: "s", remaining_seconds: 120, point_minutes: 2 };
    assert.equal(warningBanner("walltime", w, "D", { max_extension_minutes: 0 }).action, null);
    const b = warningBanner("walltime", w, "D", { max_extension_minutes: 60 });
    assert.equal(b.action, "extend");
    assert.equal(b.level, "error");
    assert.match(b.text, /time limit in 2 min 00 s/);
    assert.equal(warningBanner("walltime", { ...w, remaining_seconds: 600 }, "D").level, "warning");
  });

  it("extend step is at most 30 min and at most the policy's maximum", () => {
    assert.equal(extendStepMinutes(null), 0);
    assert.equal(extendStepMinutes({ max_extension_minutes: 5 }), 5);
    assert.equal(extendStepMinutes({ max_extension_minutes: 240 }), 30);
  });
});

describe("queue and time left", () => {
  it("the pending step shows the reason in words and Slurm's expected start", () => {
    const s = {
      state: "PENDING",
      created_at: "2026-01-01T10:00:00Z",
      reason: "queued: BeginTime",
      queue_reason: "its requested start time has not come yet",
      expected_start_at: "2026-01-01T11:00:00Z",
      job_id: "7",
    };
    const { steps } = startSteps(s, T0 + 5000);
    assert.match(steps[0].detail, /^Slurm: its requested start time has not come yet; expected start /);
    assert.match(steps[0].detail, /\(job 7\)$/);
  });

  it("time left follows Slurm's ends_at (an extension moves it)", () => {
    const s = { state: "READY", started_at: "2026-01-01T10:00:00Z", time_limit_minutes: 10 };
    assert.equal(timeLeftSeconds(s, T0 + 60000), 540);
    assert.equal(timeLeftSeconds({ ...s, ends_at: "2026-01-01T10:30:00Z" }, T0 + 60000), 1740);
    assert.equal(timeLeftSeconds({ ...s, state: "ENDED", ends_at: "2026-01-01T10:30:00Z" }, T0), null);
  });

  it("estimate text", () => {
    const future = new Date(Date.now() + 3600e3).toISOString();
    assert.match(estimateText({ estimate: { start_time: future, nodes: "n1", partition: "viz" } }), /^Slurm expects it to start .* on n1 \(partition viz\)\.$/);
    assert.match(estimateText({ estimate: { start_time: new Date().toISOString() } }), /right away/);
    assert.equal(estimateText({ estimate: null, estimate_error: "scheduler unreachable" }), "No start estimate: scheduler unreachable.");
  });
});

describe("share links", () => {
  it("reads only a well-formed share id from the query", () => {
    assert.equal(shareIdFromSearch(`?share=${SID}`), SID);
    assert.equal(shareIdFromSearch("?share=../../x"), null);
    assert.equal(shareIdFromSearch(""), null);
  });

  it("builds the absolute link from the server's link_path", () => {
    const loc = { origin: "https://viz.example.org" };
    assert.equal(shareUrl(loc, { id: SID, link_path: `/?share=${SID}` }), `https://viz.example.org/?share=${SID}`);
  });

  it("summarises scope, who and expiry", () => {
    const share = { id: SID, scope: "view", users: [], groups: [], expires_at: "2026-01-01T11:00:00Z", revoked_at: null };
    assert.equal(shareSummary(share, T0), "View only · for any signed-in user · expires in 1 h 00 min");
    assert.ok(shareActive(share, T0));
    const named = { ...share, scope: "control", users: ["bob"], groups: ["viz"] };
    assert.equal(shareSummary(named, T0), "Control · for bob, group viz · expires in 1 h 00 min");
    assert.match(shareSummary({ ...share, revoked_at: "2026-01-01T10:01:00Z" }, T0), /revoked$/);
    assert.ok(!shareActive({ ...share, revoked_at: "x" }, T0));
    assert.match(shareSummary(share, T0 + 7200e3), /expired$/);
  });

  it("viewer lines, who can be kicked, events", () => {
    const bob = { id: "c1", user: "bob", scope: "view", share_id: SID, since: "2026-01-01T09:58:00Z" };
    assert.equal(viewerLine(bob, T0), "bob · view only · connected for 2 min 00 s");
    assert.ok(canKick(bob));
    const owner = { id: "c0", user: "alice", scope: "control", share_id: null, since: "2026-01-01T09:59:00Z" };
    assert.equal(viewerLine(owner, T0), "alice (you, the owner) · connected for 1 min 00 s");
    assert.ok(!canKick(owner));
    assert.equal(viewerEventText({ event: "join", user: "bob", scope: "view" }), "bob is now watching your desktop (view only)");
    assert.equal(viewerEventText({ event: "leave", user: "bob", reason: "kicked by the owner" }), "bob left your desktop (kicked by the owner)");
    assert.equal(sharedTitle({ owner: "alice", scope: "control" }), "alice's desktop — can type and use the mouse");
  });
});
