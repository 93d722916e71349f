// vizdesk portal: the REST API client (bearer token on every call) and the
// /api/v1/events stream read with fetch() + ReadableStream (EventSource cannot send an
// Authorization header).

import { createSseParser, describeError, sseEventToAction } from "./state.js";

export class ApiError extends Error {
  constructor(info) {
    super(info.message);
    this.name = "ApiError";
    this.info = info; // {kind, message, code, field, retryAfter, signIn, status}
  }
  get status() {
    return this.info.status;
  }
}

export class Api {
  /**
   * @param {() => string|null} getToken current bearer token
   * @param {(info) => void} onAuthLost called once per 401 (the page shows sign-in)
   */
  constructor(getToken, onAuthLost) {
    this.getToken = getToken;
    this.onAuthLost = onAuthLost;
  }

  headers(extra = {}) {
    const h = { Accept: "application/json", ...extra };
    const token = this.getToken();
    if (token) h.Authorization = `Bearer ${token}`;
    return h;
  }

  async request(method, path, body = undefined, { signal } = {}) {
    const init = { method, headers: this.headers(), signal, cache: "no-store", credentials: "omit" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(path, init);
    } catch (exc) {
      if (exc?.name === "AbortError") throw exc;
      throw new ApiError(describeError(0, null));
    }
    return this.handle(resp);
  }

  async handle(resp) {
    let data = null;
    const text = await resp.text();
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (resp.ok) return data ?? {};
    const info = describeError(resp.status, data, resp.headers.get("Retry-After"));
    if (info.signIn) this.onAuthLost(info);
    throw new ApiError(info);
  }

  me() {
    return this.request("GET", "/api/v1/me");
  }

  /** The image catalog, or null when the server has none (404 / 501). */
  async images() {
    try {
      const data = await this.request("GET", "/api/v1/images");
      return Array.isArray(data.images) ? data.images : null;
    } catch (exc) {
      if (exc instanceof ApiError && (exc.status === 404 || exc.status === 501 || exc.status === 405)) return null;
      throw exc;
    }
  }

  async listSessions() {
    const data = await this.request("GET", "/api/v1/sessions");
    return Array.isArray(data.sessions) ? data.sessions : [];
  }

  getSession(id) {
    return this.request("GET", `/api/v1/sessions/${encodeURIComponent(id)}`);
  }

  createSession(body) {
    return this.request("POST", "/api/v1/sessions", body);
  }

  stopSession(id) {
    return this.request("DELETE", `/api/v1/sessions/${encodeURIComponent(id)}`);
  }

  connectTicket(id) {
    return this.request("POST", `/api/v1/sessions/${encodeURIComponent(id)}/connect`, {});
  }

  /** POST /sessions?dry_run=true: Slurm's start estimate for the shape (nothing stored). */
  estimateSession(body) {
    return this.request("POST", "/api/v1/sessions?dry_run=true", body);
  }

  keepSession(id) {
    return this.request("POST", `/api/v1/sessions/${encodeURIComponent(id)}/keep`, {});
  }

  relaunchSession(id) {
    return this.request("POST", `/api/v1/sessions/${encodeURIComponent(id)}/relaunch`, {});
  }

  extendSession(id, minutes) {
    return this.request("POST", `/api/v1/sessions/${encodeURIComponent(id)}/extend`, { minutes });
  }

  /** The desktop's thumbnail PNG as a Blob (bearer header; the server sends no-store). */
  async thumbnail(id) {
    return (await this.download(`/api/v1/sessions/${encodeURIComponent(id)}/thumbnail`)).blob;
  }

  // --- share links and viewers -------------------------------------------------------

  createShare(sessionId, body) {
    return this.request("POST", `/api/v1/sessions/${encodeURIComponent(sessionId)}/shares`, body);
  }

  async listShares(sessionId) {
    const data = await this.request("GET", `/api/v1/sessions/${encodeURIComponent(sessionId)}/shares`);
    return Array.isArray(data.shares) ? data.shares : [];
  }

  revokeShare(sessionId, shareId) {
    return this.request(
      "DELETE",
      `/api/v1/sessions/${encodeURIComponent(sessionId)}/shares/${encodeURIComponent(shareId)}`,
    );
  }

  async listViewers(sessionId) {
    const data = await this.request("GET", `/api/v1/sessions/${encodeURIComponent(sessionId)}/viewers`);
    return Array.isArray(data.viewers) ? data.viewers : [];
  }

  kickViewer(sessionId, connId) {
    return this.request(
      "DELETE",
      `/api/v1/sessions/${encodeURIComponent(sessionId)}/viewers/${encodeURIComponent(connId)}`,
    );
  }

  /** What a link opens (owner, scope, expiry, desktop state), for its recipient. */
  getShare(shareId) {
    return this.request("GET", `/api/v1/shares/${encodeURIComponent(shareId)}`);
  }

  /** The recipient's own one-time ticket: {ticket, ws_path, session_id, scope, owner}. */
  shareTicket(shareId) {
    return this.request("POST", `/api/v1/shares/${encodeURIComponent(shareId)}/ticket`, {});
  }

  // --- batch: template library, validation, jobs, results, uploads -------------------

  static templatePath(ref) {
    const r = String(ref);
    if (r.startsWith("~")) {
      const [owner, ...rest] = r.slice(1).split("/");
      return `/api/v1/job-templates/~${encodeURIComponent(owner)}/${encodeURIComponent(rest.join("/"))}`;
    }
    return `/api/v1/job-templates/${encodeURIComponent(r)}`;
  }

  async listTemplates({ category = "", tag = "", q = "" } = {}) {
    const qs = new URLSearchParams();
    if (category) qs.set("category", category);
    if (tag) qs.set("tag", tag);
    if (q) qs.set("q", q);
    const data = await this.request("GET", `/api/v1/job-templates${qs.size ? `?${qs}` : ""}`);
    return Array.isArray(data.templates) ? data.templates : [];
  }

  getTemplate(ref, version = null) {
    return this.request("GET", `${Api.templatePath(ref)}${version ? `?version=${encodeURIComponent(version)}` : ""}`);
  }

  createTemplate(body) {
    return this.request("POST", "/api/v1/job-templates", body);
  }

  updateTemplate(ref, body) {
    return this.request("PUT", Api.templatePath(ref), body);
  }

  deleteTemplate(ref) {
    return this.request("DELETE", Api.templatePath(ref));
  }

  cloneTemplate(ref, body) {
    return this.request("POST", `${Api.templatePath(ref)}/clone`, body);
  }

  validateTemplate(ref, body) {
    return this.request("POST", `${Api.templatePath(ref)}/validate`, body);
  }

  submitJob(body, { dryRun = false } = {}) {
    return this.request("POST", `/api/v1/jobs${dryRun ? "?dry_run=true" : ""}`, body);
  }

  async listJobs() {
    const data = await this.request("GET", "/api/v1/jobs");
    return Array.isArray(data.jobs) ? data.jobs : [];
  }

  getJob(id) {
    return this.request("GET", `/api/v1/jobs/${encodeURIComponent(id)}`);
  }

  cancelJob(id) {
    return this.request("DELETE", `/api/v1/jobs/${encodeURIComponent(id)}`);
  }

  /** What the job was submitted with (owner only), or null when the daemon has no such endpoint. */
  async jobRequest(id) {
    try {
      return await this.request("GET", `/api/v1/jobs/${encodeURIComponent(id)}/request`);
    } catch (exc) {
      if (exc instanceof ApiError && (exc.status === 404 || exc.status === 405 || exc.status === 501)) return null;
      throw exc;
    }
  }

  jobFiles(id) {
    return this.request("GET", `/api/v1/jobs/${encodeURIComponent(id)}/files`);
  }

  /** The tail of the job's output: {text, size, truncated}. */
  async jobOutput(id, tailBytes = 65536, { signal } = {}) {
    let resp;
    try {
      resp = await fetch(`/api/v1/jobs/${encodeURIComponent(id)}/output?tail_bytes=${tailBytes}`, {
        headers: this.headers({ Accept: "text/plain" }),
        cache: "no-store",
        credentials: "omit",
        signal,
      });
    } catch (exc) {
      if (exc?.name === "AbortError") throw exc;
      throw new ApiError(describeError(0, null));
    }
    if (!resp.ok) return this.handle(resp);
    const text = await resp.text();
    const size = Number(resp.headers.get("X-Output-Size"));
    return {
      text,
      size: Number.isFinite(size) ? size : text.length,
      truncated: (resp.headers.get("X-Output-Truncated") ?? "").toLowerCase() === "true",
    };
  }

  /**
   * Downloads an API path with the bearer header (never a token in a URL) and returns
   * {blob, filename}; the page saves it through an object URL.
   */
  async download(path) {
    let resp;
    try {
      resp = await fetch(path, { headers: this.headers({ Accept: "*/*" }), cache: "no-store", credentials: "omit" });
    } catch {
      throw new ApiError(describeError(0, null));
    }
    if (!resp.ok) return this.handle(resp);
    return { blob: await resp.blob(), disposition: resp.headers.get("Content-Disposition") };
  }

  async listUploads() {
    try {
      const data = await this.request("GET", "/api/v1/uploads");
      return Array.isArray(data.uploads) ? data.uploads : [];
    } catch (exc) {
      if (exc instanceof ApiError && (exc.status === 404 || exc.status === 405)) return [];
      throw exc;
    }
  }

  /** Revokes the caller's own token (best effort: a token without jti cannot be revoked). */
  logout() {
    return this.request("POST", "/api/v1/auth/logout", {});
  }

  /** GET /readyz → {status, slurm, redis}; {reachable: false} when the service is unreachable. */
  async readiness() {
    try {
      const resp = await fetch("/readyz", { cache: "no-store", credentials: "omit" });
      const data = await resp.json().catch(() => ({}));
      return { reachable: true, slurm: data.slurm, redis: data.redis, status: data.status };
    } catch {
      return { reachable: false };
    }
  }

  /**
   * Reads /api/v1/events until it ends, the signal aborts or an error occurs. Calls
   * onOpen() once the stream is established and onAction(action) for every event.
   * Resolves when the stream ends; rejects with ApiError for an HTTP error status.
   */
  async streamEvents({ signal, onOpen, onAction }) {
    let resp;
    try {
      resp = await fetch("/api/v1/events", {
        headers: this.headers({ Accept: "text/event-stream" }),
        cache: "no-store",
        credentials: "omit",
        signal,
      });
    } catch (exc) {
      if (exc?.name === "AbortError") return;
      throw new ApiError(describeError(0, null));
    }
    if (!resp.ok) {
      await this.handle(resp); // throws
      return;
    }
    const type = resp.headers.get("Content-Type") ?? "";
    if (!type.startsWith("text/event-stream") || !resp.body) {
      throw new ApiError({ ...describeError(501, null), kind: "unsupported" });
    }
    onOpen?.();
    const parser = createSseParser();
    const reader = resp.body.getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        for (const ev of parser.push(value)) {
          const action = sseEventToAction(ev);
          if (action) onAction(action);
        }
      }
      for (const ev of parser.end()) {
        const action = sseEventToAction(ev);
        if (action) onAction(action);
      }
    } catch (exc) {
      if (exc?.name === "AbortError" || signal?.aborted) return;
      throw new ApiError(describeError(0, null));
    } finally {
      reader.releaseLock?.();
    }
  }
}
