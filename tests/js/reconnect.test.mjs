// Unit tests of the portal's reconnect logic (daemon/vizdesk/static/reconnect.js).
// Run: node --test tests/js/
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import {
  Backoff,
  GIVE_UP_MS,
  RECONNECT_DELAYS_S,
  STABLE_MS,
  classifyClose,
  reconnectDelaySeconds,
  retryableStatus,
} from "../../daemon/vizdesk/static/reconnect.js";

describe("reconnect schedule", () => {
  it("is 0.25, 0.5, 1, 2, 4 s, capped at 4 s", () => {
    assert.deepEqual(RECONNECT_DELAYS_S, [0.25, 0.5, 1, 2, 4]);
    assert.deepEqual([0, 1, 2, 3, 4, 5, 9, 100].map(reconnectDelaySeconds), [0.25, 0.5, 1, 2, 4, 4, 4, 4]);
    assert.equal(reconnectDelaySeconds(-3), 0.25);
    assert.equal(reconnectDelaySeconds(undefined), 0.25);
  });

  it("Backoff walks the schedule while the outage lasts", () => {
    const b = new Backoff();
    const delays = [];
    let now = 1000;
    for (let i = 0; i < 7; i++) {
      const step = b.next(now);
      assert.equal(step.giveUp, false);
      assert.equal(step.attempt, i + 1);
      delays.push(step.delayMs);
      now += step.delayMs + 50; // the attempt itself fails after 50 ms
    }
    assert.deepEqual(delays, [250, 500, 1000, 2000, 4000, 4000, 4000]);
    assert.equal(b.down, true);
  });

  it("the first retry comes within 1 s", () => {
    assert.ok(new Backoff().next(0).delayMs <= 1000);
    assert.ok(new Backoff({ giveUpMs: null }).next(0).delayMs <= 1000);
  });

  it("gives up after the bounded time (2 minutes by default)", () => {
    assert.equal(GIVE_UP_MS, 120000);
    const b = new Backoff();
    let now = 0;
    let step;
    let attempts = 0;
    for (;;) {
      step = b.next(now);
      if (step.giveUp) break;
      attempts++;
      now += step.delayMs + 100;
      assert.ok(attempts < 1000, "never gave up");
    }
    assert.ok(step.downForMs >= GIVE_UP_MS && step.downForMs < GIVE_UP_MS + 4200, String(step.downForMs));
    // 0.25+0.5+1+2 s then every 4 s (+0.1 s per failed attempt) until 120 s
    assert.ok(attempts > 25 && attempts < 35, String(attempts));
    // and keeps saying so until reset
    assert.equal(b.next(now + 10).giveUp, true);
    b.reset();
    assert.deepEqual(b.next(now + 20), { giveUp: false, delayMs: 250, attempt: 1 });
  });

  it("never gives up with giveUpMs: null (the events stream)", () => {
    const b = new Backoff({ giveUpMs: null });
    assert.equal(b.next(0).giveUp, false);
    const late = b.next(10 * GIVE_UP_MS);
    assert.equal(late.giveUp, false);
    assert.equal(late.delayMs, 500);
  });

  it("resets after a connection that stayed up", () => {
    const b = new Backoff();
    let now = 0;
    for (let i = 0; i < 5; i++) now += b.next(now).delayMs;
    b.connected(now);
    assert.equal(b.down, false);
    now += STABLE_MS; // up long enough
    assert.deepEqual(b.next(now), { giveUp: false, delayMs: 250, attempt: 1 });
    // a whole new outage: the give-up clock starts again too
    assert.equal(b.next(now + GIVE_UP_MS - 1).giveUp, false);
    assert.equal(b.next(now + GIVE_UP_MS).giveUp, true);
  });

  it("a connection that dropped at once continues the schedule and the give-up clock", () => {
    const b = new Backoff();
    assert.equal(b.next(0).delayMs, 250);
    assert.equal(b.next(300).delayMs, 500);
    b.connected(900);
    assert.equal(b.next(900 + STABLE_MS - 1).delayMs, 1000); // flapping: no reset
    b.connected(GIVE_UP_MS - 10);
    assert.equal(b.next(GIVE_UP_MS + 5).giveUp, true);
  });
});

describe("classifyClose", () => {
  it("reconnects after a restart, a crash or a network fault", () => {
    for (const code of [1001, 1005, 1006, 1011, 1012, 1013, 1014]) {
      assert.equal(classifyClose({ code }), "reconnect", String(code));
    }
  });

  it("stops on a normal close, a protocol fault, and the daemon's policy closes", () => {
    for (const code of [1000, 1002, 1003, 1007, 1009, 1010, 1015]) {
      assert.equal(classifyClose({ code }), "stop", String(code));
    }
    // 1008: kicked, link revoked / expired, view-only input → final
    for (const reason of ["kicked", "link revoked", "link expired", "link gone", "input_refused", ""]) {
      assert.equal(classifyClose({ code: 1008, reason }), "stop", reason);
    }
    // 4xxx: application policy (session ended, revoked, forbidden) → final
    for (const code of [4000, 4001, 4003, 4404, 4999]) assert.equal(classifyClose({ code }), "stop");
  });

  it("reconnects after the transient 1008 closes (slow browser, slow handshake)", () => {
    assert.equal(classifyClose({ code: 1008, reason: "slow_client" }), "reconnect");
    assert.equal(classifyClose({ code: 1008, reason: "handshake_timeout" }), "reconnect");
  });

  it("never reconnects what the user closed or a failed VNC handshake", () => {
    assert.equal(classifyClose({ code: 1006, userAsked: true }), "stop");
    assert.equal(classifyClose({ code: 1006, securityFailure: "bad ticket" }), "stop");
    assert.equal(classifyClose({ code: null }), "stop"); // noVNC ended it itself
    assert.equal(classifyClose(), "stop");
  });
});

describe("retryableStatus", () => {
  it("retries no answer and the server's temporary errors", () => {
    for (const s of [0, 408, 429, 500, 502, 503, 504]) assert.equal(retryableStatus(s), true, String(s));
  });

  it("does not retry sign-in, forbidden, gone, not ready", () => {
    for (const s of [400, 401, 403, 404, 409, 410, 413, 501]) assert.equal(retryableStatus(s), false, String(s));
  });
});
