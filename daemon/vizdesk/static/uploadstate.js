// vizdesk portal: the upload state machine (pure, unit-tested with `node --test`).
// One entry per file the user gave a slot. uploads.js drives tus-js-client and feeds the
// events here; the page renders what this returns.
//
//   refused     the file failed the slot's client-side check (pattern, size): never sent
//   queued      accepted, waiting to start
//   uploading   bytes are going out (tus PATCH requests)
//   retrying    a request failed (connection dropped, server busy): tus retries by itself
//   paused      the user paused it (the server keeps the offset)
//   auth        the token expired mid-way: waits for a new one, then continues from the offset
//   done        every byte is on the server (the upload id goes into the job request)
//   failed      gave up (refused by the server: 4xx other than 401/409/423, or out of retries)
//   cancelled   the user cancelled it (the upload is terminated on the server)

export const UPLOAD_STATES = Object.freeze([
  "refused",
  "queued",
  "uploading",
  "retrying",
  "paused",
  "auth",
  "done",
  "failed",
  "cancelled",
]);

const FINAL = new Set(["refused", "done", "failed", "cancelled"]);

export function isUploadFinal(state) {
  return FINAL.has(state);
}

/** Which buttons make sense in a state. */
export function uploadActions(state) {
  return {
    pause: state === "uploading" || state === "retrying" || state === "queued",
    resume: state === "paused" || state === "failed",
    cancel: !FINAL.has(state) || state === "failed",
    remove: FINAL.has(state),
  };
}

/** True while the upload still has to finish before the job can be submitted. */
export function isUploadBusy(state) {
  return !FINAL.has(state);
}

const SPEED_WINDOW_MS = 5000;

/** A new entry for a file (`check` is the slot check's error or null). */
export function newUpload({ key, slot, name, size, now = 0, check = null }) {
  return {
    key,
    slot,
    name,
    size,
    state: check ? "refused" : "queued",
    error: check ? check.message : null,
    errorCode: check ? check.code : null,
    offset: 0,
    startOffset: null, // the offset this attempt started from (0: fresh; > 0: resumed)
    resumedFrom: null, // the offset the first PATCH went out at, when > 0 (a resumed upload)
    resumedUpload: false, // tus found this file's upload from an earlier attempt (reload)
    patches: 0,
    uploadId: null,
    url: null,
    samples: [], // [ms, bytes] within the speed window
    startedAt: null,
    updatedAt: now,
    attempts: 0,
  };
}

function withSample(u, bytes, now) {
  const samples = [...u.samples, [now, bytes]].filter(([t]) => now - t <= SPEED_WINDOW_MS);
  return samples;
}

/**
 * Applies one event to an upload entry and returns the new entry (the input is not
 * changed). Events: {type: "start"|"url"|"progress"|"pause"|"resume"|"retry"|"auth"|
 * "token"|"success"|"error"|"cancel", now, ...}. Events that make no sense in a state are
 * ignored (the same entry is returned).
 */
export function uploadReducer(u, ev) {
  const now = ev.now ?? u.updatedAt;
  const s = u.state;
  const next = (changes) => ({ ...u, ...changes, updatedAt: now });
  switch (ev.type) {
    case "start": // tus-js-client starts (or restarts) the upload, maybe from an earlier offset
      if (!["queued", "paused", "failed", "auth", "retrying"].includes(s)) return u;
      return next({
        state: "uploading",
        error: null,
        errorCode: null,
        startedAt: u.startedAt ?? now,
        attempts: u.attempts + 1,
        startOffset: null,
      });
    case "url": {
      // the upload exists on the server (created now, or found from an earlier attempt)
      const id = ev.uploadId ?? (ev.url ? String(ev.url).split("/").filter(Boolean).pop() : u.uploadId);
      return next({ url: ev.url ?? u.url, uploadId: id, resumedUpload: Boolean(ev.resumed) || Boolean(u.resumedUpload) });
    }
    case "patch": {
      // a PATCH goes out at this offset: the first one of an attempt says where it resumed
      if (isUploadFinal(s)) return u;
      const offset = Math.max(0, Number(ev.offset) || 0);
      const first = u.startOffset === null;
      return next({
        startOffset: first ? offset : u.startOffset,
        resumedFrom: u.resumedFrom === null && first && offset > 0 ? offset : u.resumedFrom,
        offset: Math.max(u.offset, offset),
        patches: (u.patches ?? 0) + 1,
      });
    }
    case "progress": {
      if (!["uploading", "retrying", "queued"].includes(s)) return u;
      const bytes = Math.max(0, Math.min(Number(ev.bytes) || 0, u.size));
      return next({ state: "uploading", offset: bytes, samples: withSample(u, bytes, now) });
    }
    case "pause":
      if (!["uploading", "retrying", "queued", "auth"].includes(s)) return u;
      return next({ state: "paused", samples: [] });
    case "resume":
      if (s !== "paused" && s !== "failed") return u;
      return next({ state: "queued", error: null, errorCode: null, samples: [], startOffset: null });
    case "retry": // the connection dropped: tus-js-client retries from the server's offset
      if (s !== "uploading" && s !== "queued" && s !== "retrying") return u;
      return next({ state: "retrying", error: ev.message ?? "connection lost, retrying", samples: [] });
    case "auth": // 401: the token expired mid-way
      if (isUploadFinal(s) || s === "paused") return u;
      return next({ state: "auth", error: "waiting for a new sign-in token", samples: [] });
    case "token": // a new token arrived
      if (s !== "auth") return u;
      return next({ state: "queued", error: null, startOffset: null });
    case "success":
      if (isUploadFinal(s) && s !== "failed") return u;
      return next({ state: "done", offset: u.size, error: null, errorCode: null, samples: [] });
    case "error":
      if (isUploadFinal(s)) return u;
      return next({ state: "failed", error: ev.message ?? "upload failed", errorCode: ev.code ?? null, samples: [] });
    case "cancel":
      if (s === "done" || s === "cancelled") return u;
      return next({ state: "cancelled", samples: [] });
    case "invalid": // the server's validation refused the (finished) file
      return next({ errorCode: ev.code ?? "invalid", error: ev.message ?? "refused by the template's check" });
    default:
      return u;
  }
}

/** Bytes per second over the last few seconds (null until there are two samples). */
export function uploadSpeed(u) {
  if (u.samples.length < 2) return null;
  const [t0, b0] = u.samples[0];
  const [t1, b1] = u.samples[u.samples.length - 1];
  if (t1 <= t0) return null;
  return Math.max(0, ((b1 - b0) * 1000) / (t1 - t0));
}

/** Seconds left at the current speed (null when unknown). */
export function uploadEta(u) {
  const speed = uploadSpeed(u);
  if (!speed) return null;
  return Math.max(0, (u.size - u.offset) / speed);
}

/** Share done in 0..1. */
export function uploadFraction(u) {
  if (!u.size) return u.state === "done" ? 1 : 0;
  return Math.max(0, Math.min(1, u.offset / u.size));
}

/** "12.5 MB/s" (decimal megabytes, as people read network speeds). */
export function formatSpeed(bytesPerSecond) {
  if (bytesPerSecond === null || bytesPerSecond === undefined) return "";
  const mb = bytesPerSecond / 1e6;
  return `${mb >= 100 ? mb.toFixed(0) : mb >= 10 ? mb.toFixed(1) : mb.toFixed(2)} MB/s`;
}

/**
 * Classifies a tus-js-client error by the HTTP status of its response (0 when there was
 * no response): "auth" (401: renew the token), "retry" (network, 409 offset mismatch, 423
 * locked, 429, 5xx), "fatal" (other 4xx: 404 expired/unknown, 413 too big, 400 refused).
 */
export function classifyUploadError(status) {
  if (status === 401) return "auth";
  if (!status || status === 409 || status === 423 || status === 429 || status >= 500) return "retry";
  return "fatal";
}

/** Upload-Metadata for tus-js-client: filename, slot, template. */
export function uploadMetadata(name, slot, templateRef) {
  const meta = { filename: name };
  if (slot) meta.slot = slot;
  if (templateRef) meta.template = templateRef;
  return meta;
}
