// vizdesk portal: file uploads over tus 1.0 with tus-js-client (vendored, window.tus),
// driven through the pure state machine of uploadstate.js. Every request takes the
// *current* token (onBeforeRequest), so a token renewed mid-way is used by the next
// chunk; a 401 parks the upload until a new token arrives, then it continues from the
// server's offset. After a reload, adding the same file again finds the earlier upload
// (tus-js-client's fingerprint in localStorage) and resumes it from its offset.

import { classifyUploadError, isUploadBusy, newUpload, uploadMetadata, uploadReducer } from "./uploadstate.js";

const ENDPOINT = "/api/v1/uploads";
const CHUNK_BYTES = 8 * 1024 * 1024;
const RETRY_DELAYS = [0, 1000, 2000, 4000, 8000, 15000, 15000, 30000];
const LEDGER_KEY = "vizdesk.uploads"; // what the form had: re-attached / resumable after a reload

function ledgerRead() {
  try {
    const v = JSON.parse(localStorage.getItem(LEDGER_KEY) ?? "[]");
    return Array.isArray(v) ? v : [];
  } catch {
    return [];
  }
}

function ledgerWrite(list) {
  try {
    localStorage.setItem(LEDGER_KEY, JSON.stringify(list.slice(-50)));
  } catch {
    /* storage full or disabled: no resume after reload, uploads still work */
  }
}

function errorStatus(err) {
  try {
    return err?.originalResponse?.getStatus?.() ?? 0;
  } catch {
    return 0;
  }
}

function errorMessage(err) {
  try {
    const body = err?.originalResponse?.getBody?.();
    const parsed = body ? JSON.parse(body) : null;
    if (parsed?.error?.message) return { message: parsed.error.message, code: parsed.error.code ?? null };
  } catch {
    /* not JSON */
  }
  const status = errorStatus(err);
  if (status) return { message: `the server refused the upload (HTTP ${status})`, code: null };
  return { message: "the connection to the server was lost", code: null };
}

let seq = 0;

export class UploadManager {
  /**
   * @param {object} o
   * @param {() => string|null} o.getToken the current bearer token
   * @param {(entry) => void} o.onChange called after every state change of an entry
   */
  constructor({ getToken, onChange }) {
    this.getToken = getToken;
    this.onChange = onChange;
    this.entries = new Map(); // key → state-machine entry
    this.tus = new Map(); // key → tus.Upload
    this.files = new Map(); // key → File
    this.meta = new Map(); // key → {template}
  }

  get available() {
    return typeof window !== "undefined" && Boolean(window.tus?.Upload) && window.tus.isSupported !== false;
  }

  dispatch(key, ev) {
    const prev = this.entries.get(key);
    if (!prev) return;
    const next = uploadReducer(prev, { now: Date.now(), ...ev });
    if (next === prev) return;
    this.entries.set(key, next);
    this.saveLedger(key);
    this.onChange(next);
  }

  /** Adds a file to a slot (`check`: the slot check's error or null) and starts it when accepted. */
  add({ slot, file, template, check = null }) {
    const key = `u${++seq}`;
    const entry = newUpload({ key, slot, name: file.name, size: file.size, now: Date.now(), check });
    this.entries.set(key, entry);
    this.files.set(key, file);
    this.meta.set(key, { template, lastModified: file.lastModified });
    this.onChange(entry);
    if (!check) this.start(key);
    return key;
  }

  /** Entries that came back from the ledger after a reload: done uploads (ids reusable) of a template. */
  restoreDone(template) {
    const out = [];
    for (const rec of ledgerRead()) {
      if (rec.template !== template || rec.state !== "done" || !rec.uploadId) continue;
      const key = `u${++seq}`;
      const entry = { ...newUpload({ key, slot: rec.slot, name: rec.name, size: rec.size, now: Date.now() }), state: "done", offset: rec.size, uploadId: rec.uploadId, restored: true };
      this.entries.set(key, entry);
      this.meta.set(key, { template, lastModified: rec.lastModified });
      out.push(entry);
    }
    return out;
  }

  /** Uploads of a template left unfinished by an earlier page (reload, closed tab): [{slot, name, size}]. */
  unfinished(template) {
    return ledgerRead().filter((r) => r.template === template && r.state !== "done");
  }

  saveLedger(key) {
    const e = this.entries.get(key);
    const m = this.meta.get(key);
    if (!e || !m) return;
    const same = (r) => r.template === m.template && r.slot === e.slot && r.name === e.name && r.size === e.size;
    let list = ledgerRead().filter((r) => !same(r));
    if (e.state === "done" && e.uploadId) list.push({ template: m.template, slot: e.slot, name: e.name, size: e.size, lastModified: m.lastModified, uploadId: e.uploadId, state: "done" });
    else if (["uploading", "retrying", "paused", "auth", "queued"].includes(e.state)) list.push({ template: m.template, slot: e.slot, name: e.name, size: e.size, lastModified: m.lastModified, uploadId: e.uploadId, state: "partial" });
    ledgerWrite(list);
  }

  /** Forget what the ledger says about a template (after a submission consumed its uploads). */
  forgetTemplate(template) {
    ledgerWrite(ledgerRead().filter((r) => r.template !== template));
  }

  async start(key) {
    const file = this.files.get(key);
    const entry = this.entries.get(key);
    if (!file || !entry || !this.available) {
      if (entry && !this.available) this.dispatch(key, { type: "error", message: "this browser cannot upload (tus-js-client missing)" });
      return;
    }
    let up = this.tus.get(key);
    if (!up) {
      const { template } = this.meta.get(key);
      up = new window.tus.Upload(file, {
        endpoint: ENDPOINT,
        chunkSize: CHUNK_BYTES,
        retryDelays: RETRY_DELAYS,
        metadata: uploadMetadata(file.name, entry.slot, template),
        storeFingerprintForResuming: true,
        removeFingerprintOnSuccess: true,
        onBeforeRequest: (req) => {
          const token = this.getToken();
          if (token) req.setHeader("Authorization", `Bearer ${token}`);
          if (req.getMethod() === "PATCH") {
            const offset = Number(req.getHeader?.("Upload-Offset"));
            if (Number.isFinite(offset)) this.dispatch(key, { type: "patch", offset });
          }
        },
        onUploadUrlAvailable: () => this.dispatch(key, { type: "url", url: up.url }),
        onProgress: (sent) => this.dispatch(key, { type: "progress", bytes: sent }),
        onSuccess: () => {
          this.dispatch(key, { type: "url", url: up.url });
          this.dispatch(key, { type: "success" });
        },
        onShouldRetry: (err) => {
          const kind = classifyUploadError(errorStatus(err));
          if (kind !== "retry") return false;
          this.dispatch(key, { type: "retry", message: `${errorMessage(err).message}; retrying` });
          return true;
        },
        onError: (err) => {
          const kind = classifyUploadError(errorStatus(err));
          if (kind === "auth") this.dispatch(key, { type: "auth" });
          else this.dispatch(key, { type: "error", ...errorMessage(err) });
        },
      });
      this.tus.set(key, up);
      try {
        const previous = await up.findPreviousUploads();
        if (previous.length) {
          up.resumeFromPreviousUpload(previous[0]);
          this.dispatch(key, { type: "url", url: previous[0].uploadUrl, resumed: true });
        }
      } catch {
        /* no storage: start fresh */
      }
    }
    if (this.entries.get(key)?.state === "paused") return; // paused while looking up
    this.dispatch(key, { type: "start" });
    up.start();
  }

  pause(key) {
    const up = this.tus.get(key);
    this.dispatch(key, { type: "pause" });
    up?.abort(false);
  }

  resume(key) {
    this.dispatch(key, { type: "resume" });
    this.start(key);
  }

  async cancel(key) {
    const up = this.tus.get(key);
    const e = this.entries.get(key);
    this.dispatch(key, { type: "cancel" });
    if (up) {
      try {
        await up.abort(Boolean(up.url) && e?.state !== "done"); // terminate it on the server too
      } catch {
        /* already gone */
      }
    }
  }

  remove(key) {
    const e = this.entries.get(key);
    if (e && isUploadBusy(e.state)) return;
    this.entries.delete(key);
    this.tus.delete(key);
    this.files.delete(key);
    const m = this.meta.get(key);
    this.meta.delete(key);
    if (e && m) ledgerWrite(ledgerRead().filter((r) => !(r.template === m.template && r.slot === e.slot && r.name === e.name && r.size === e.size)));
  }

  /** A new token arrived: uploads parked on a 401 continue from their offset. */
  tokenRenewed() {
    for (const [key, e] of this.entries) {
      if (e.state === "auth") {
        this.dispatch(key, { type: "token" });
        this.start(key);
      }
    }
  }

  /** An `upload` event from /api/v1/events (the server's view: offset, state). */
  serverEvent(view) {
    for (const [key, e] of this.entries) {
      if (e.uploadId === view.id && view.state === "terminated" && e.state !== "cancelled" && e.state !== "done") {
        this.dispatch(key, { type: "error", message: "the upload was removed on the server (expired or cancelled elsewhere)" });
      }
    }
  }

  forTemplate(template) {
    return [...this.entries.values()].filter((e) => this.meta.get(e.key)?.template === template);
  }

  /** Finished upload ids per slot and the slots still busy, for a template. */
  collect(template) {
    const ids = {};
    const busy = new Set();
    for (const e of this.forTemplate(template)) {
      if (e.state === "done" && e.uploadId) (ids[e.slot] ??= []).push(e.uploadId);
      else if (isUploadBusy(e.state)) busy.add(e.slot);
    }
    return { ids, busy };
  }

  /** After a submission: the job consumed these uploads. */
  clearTemplate(template) {
    for (const e of this.forTemplate(template)) {
      if (!isUploadBusy(e.state)) {
        this.entries.delete(e.key);
        this.tus.delete(e.key);
        this.files.delete(e.key);
        this.meta.delete(e.key);
      }
    }
    this.forgetTemplate(template);
  }

  get anyBusy() {
    return [...this.entries.values()].some((e) => ["uploading", "retrying", "auth"].includes(e.state));
  }
}
