// vizdesk portal: when to reconnect by itself, and how long to wait (pure logic, no DOM).
// Several daemon replicas may serve one desktop (behind a load balancer): when the one
// serving the page restarts or dies, the desktop keeps running and any other replica can
// serve it after a fresh ticket. A websocket or events stream that drops for such a reason
// is reconnected with a short backoff; a close that means "you may not" or "it is over"
// is final.

/** Seconds to wait before reconnect attempt n (0-based): 0.25, 0.5, 1, 2, 4, 4 … */
export const RECONNECT_DELAYS_S = Object.freeze([0.25, 0.5, 1, 2, 4]);
/** The desktop view stops trying (and offers a Reconnect button) after this long down. */
export const GIVE_UP_MS = 120000;
/** A connection that stayed up this long starts the schedule from the beginning again. */
export const STABLE_MS = 10000;

export function reconnectDelaySeconds(attempt) {
  const n = Math.max(0, Math.floor(Number(attempt) || 0));
  return RECONNECT_DELAYS_S[Math.min(n, RECONNECT_DELAYS_S.length - 1)];
}

/**
 * Backoff state of one connection (the desktop websocket, the events stream).
 * connected(now) when a connection is established; next(now) when it dropped or an
 * attempt failed: {giveUp: false, delayMs, attempt} or {giveUp: true, downForMs}.
 * A drop of a connection that stayed up at least `stableMs` resets the schedule and the
 * give-up clock; one that dropped sooner continues both (a flapping replica is not
 * retried at 0.25 s forever). `giveUpMs: null` never gives up.
 */
export class Backoff {
  constructor({ delays = RECONNECT_DELAYS_S, giveUpMs = GIVE_UP_MS, stableMs = STABLE_MS } = {}) {
    this.delays = delays;
    this.giveUpMs = giveUpMs;
    this.stableMs = stableMs;
    this.reset();
  }

  reset() {
    this.attempt = 0;
    this.downSince = null; // when the current outage began (ms)
    this.upSince = null; // when the current connection was established (ms)
  }

  connected(nowMs) {
    this.upSince = nowMs;
  }

  /** True while an outage is being bridged (after a drop, before a stable connection). */
  get down() {
    return this.downSince !== null && this.upSince === null;
  }

  next(nowMs) {
    if (this.upSince !== null) {
      if (nowMs - this.upSince >= this.stableMs) {
        this.attempt = 0;
        this.downSince = null;
      }
      this.upSince = null;
    }
    if (this.downSince === null) this.downSince = nowMs;
    const downForMs = nowMs - this.downSince;
    if (this.giveUpMs !== null && downForMs >= this.giveUpMs) return { giveUp: true, downForMs };
    const n = this.attempt++;
    const s = this.delays[Math.min(n, this.delays.length - 1)];
    return { giveUp: false, delayMs: Math.round(s * 1000), attempt: n + 1 };
  }
}

// Websocket close codes (RFC 6455 §7.4, IANA registry) as the daemon's proxy uses them
// (daemon/vizdesk/proxy/bridge.py): 1000 the VNC server closed or the idle timeout;
// 1012 the replica is stopping (SIGTERM: a restart, a rolling upgrade; another replica
// serves the desktop after a fresh ticket); 1001 a shutdown that cancelled the bridge
// (daemons before the 1012 close; their websockets could also reach the browser as 1006,
// cut after the shutdown timeout without a close frame); 1002/1003/1009 protocol
// faults; 1008 policy: a viewer kicked, a share link revoked or expired, view-only input,
// a browser too slow to take data (slow_client), a handshake that took too long;
// 1011 internal error; 1013 the VNC server refused the proxy's handshake (try later).
// 1006 is never sent: the browser reports it when the connection was lost without a close
// frame (a killed daemon, a network fault) or when the websocket upgrade was refused (an
// HTTP 403/404/409/429 — the page cannot see which).
const RECONNECT_CODES = new Set([1001, 1005, 1006, 1011, 1012, 1013, 1014]);
/** 1008 reasons that describe a transient fault, not a decision about this viewer. */
const TRANSIENT_POLICY_REASONS = new Set(["slow_client", "handshake_timeout"]);

/**
 * Whether a closed desktop websocket is reconnected by itself: "reconnect" or "stop".
 * `code`/`reason` from the websocket's close event (null if none came), `userAsked`: the
 * user pressed Disconnect (or left the view), `securityFailure`: the VNC handshake failed.
 */
export function classifyClose({ code = null, reason = "", userAsked = false, securityFailure = null } = {}) {
  if (userAsked || securityFailure) return "stop";
  // no close event before noVNC's disconnect: the page itself ended the connection (noVNC
  // found a protocol fault), not the network
  if (code === null || code === undefined) return "stop";
  if (code >= 4000 && code <= 4999) return "stop"; // application policy: ended, revoked, forbidden
  if (code === 1008) return TRANSIENT_POLICY_REASONS.has(String(reason)) ? "reconnect" : "stop";
  return RECONNECT_CODES.has(code) ? "reconnect" : "stop";
}

/**
 * Whether a failed ticket request (or events stream request) is worth retrying: HTTP
 * status 0 (no answer: the daemon is down or restarting), 408, 429, 502, 503, 504, 500.
 * 401 (sign in again), 403 (link revoked, forbidden), 404 (no such session), 409 (not
 * READY: stopping or ended) are final.
 */
export function retryableStatus(status) {
  return [0, 408, 429, 500, 502, 503, 504].includes(Number(status));
}
