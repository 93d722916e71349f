// vizdesk portal: pure logic of the page (no DOM, no network), unit-tested with
// `node --test tests/js/`. app.js wires it to the DOM, api.js to the network.

export const STATES = Object.freeze(["PENDING", "STARTING", "READY", "STOPPING", "ENDED", "FAILED"]);
export const FINAL_STATES = Object.freeze(new Set(["ENDED", "FAILED"]));
export const TOKEN_STORAGE_KEY = "vizdesk.token";

/** True for ENDED / FAILED (a session that will never change again). */
export function isFinal(state) {
  return FINAL_STATES.has(state);
}

/** True while the session holds (or waits for) a Slurm job. */
export function isActive(state) {
  return state !== undefined && state !== null && !isFinal(state);
}

export function canOpen(session) {
  return session?.state === "READY";
}

export function canStop(session) {
  return ["PENDING", "STARTING", "READY"].includes(session?.state);
}

const STATE_LABELS = {
  PENDING: "Queued",
  STARTING: "Starting",
  READY: "Ready",
  STOPPING: "Stopping",
  ENDED: "Ended",
  FAILED: "Failed",
};

export function stateLabel(state) {
  return STATE_LABELS[state] ?? String(state ?? "Unknown");
}

// ---------------------------------------------------------------------------------
// Server-Sent Events: incremental parser (WHATWG "event stream interpretation").
// Chunks may split anywhere: inside a line, between "\r" and "\n", inside a UTF-8
// sequence (when bytes are pushed) or between events.

/**
 * Returns a parser; `push(chunk)` takes a string or Uint8Array and returns the events
 * completed by it as `{event, data, id, retry}` objects (event defaults to "message").
 * `end()` flushes the decoder and drops an unterminated event, as the spec says.
 */
export function createSseParser() {
  const decoder = new TextDecoder("utf-8");
  let buffer = "";
  let pendingCR = false; // last chunk ended in "\r": a following "\n" belongs to it
  let firstChunk = true;
  let dataLines = null;
  let eventType = "";
  let lastEventId = "";
  let retry = null;

  function processLine(line, out) {
    if (line === "") {
      if (dataLines !== null) {
        out.push({ event: eventType || "message", data: dataLines.join("\n"), id: lastEventId, retry });
      }
      dataLines = null;
      eventType = "";
      retry = null;
      return;
    }
    if (line.startsWith(":")) return; // comment / keep-alive
    const colon = line.indexOf(":");
    let field = line;
    let value = "";
    if (colon >= 0) {
      field = line.slice(0, colon);
      value = line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
    }
    switch (field) {
      case "event":
        eventType = value;
        break;
      case "data":
        (dataLines ??= []).push(value);
        break;
      case "id":
        if (!value.includes("\0")) lastEventId = value;
        break;
      case "retry":
        if (/^\d+$/.test(value)) retry = Number(value);
        break;
      default:
        break; // unknown fields are ignored
    }
  }

  function consume(text) {
    const out = [];
    if (firstChunk && text.length > 0) {
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1); // BOM
      firstChunk = false;
    }
    if (pendingCR && text.startsWith("\n")) text = text.slice(1);
    pendingCR = false;
    buffer += text;
    let start = 0;
    for (let i = 0; i < buffer.length; i++) {
      const c = buffer[i];
      if (c === "\n" || c === "\r") {
        processLine(buffer.slice(start, i), out);
        if (c === "\r") {
          if (i + 1 < buffer.length) {
            if (buffer[i + 1] === "\n") i++;
          } else {
            pendingCR = true;
          }
        }
        start = i + 1;
      }
    }
    buffer = buffer.slice(start);
    return out;
  }

  return {
    push(chunk) {
      const text = typeof chunk === "string" ? chunk : decoder.decode(chunk, { stream: true });
      return consume(text);
    },
    end() {
      const out = consume(decoder.decode());
      buffer = "";
      dataLines = null;
      return out;
    },
    get lastEventId() {
      return lastEventId;
    },
  };
}

/**
 * Maps one parsed SSE event of /api/v1/events to an action for the page:
 * `{type: "session", session}`, `{type: "job", job}`, `{type: "upload", upload}`,
 * `{type: "status", slurm}` or null (ignored / malformed).
 */
export function sseEventToAction(ev) {
  let payload;
  try {
    payload = JSON.parse(ev.data);
  } catch {
    return null;
  }
  if (payload === null || typeof payload !== "object") return null;
  if (ev.event === "session") {
    if (typeof payload.id !== "string" || typeof payload.state !== "string") return null;
    return { type: "session", session: payload };
  }
  if (ev.event === "job") {
    if (typeof payload.id !== "string" || typeof payload.state !== "string") return null;
    return { type: "job", job: payload };
  }
  if (ev.event === "upload") {
    if (typeof payload.id !== "string") return null;
    return { type: "upload", upload: payload };
  }
  if (ev.event === "viewer") {
    if (typeof payload.session_id !== "string" || typeof payload.event !== "string") return null;
    return { type: "viewer", viewer: payload };
  }
  if (ev.event === "idle_warning" || ev.event === "walltime_warning") {
    if (typeof payload.session_id !== "string") return null;
    return { type: "warning", kind: ev.event === "idle_warning" ? "idle" : "walltime", warning: payload };
  }
  if (ev.event === "status") {
    const slurm = payload.slurm === "ok" || payload.slurm === true ? "ok" : "unreachable";
    return { type: "status", slurm };
  }
  return null;
}

// ---------------------------------------------------------------------------------
// Session collection

/**
 * Merges a session update into a Map id → session (returns a new Map; the input is not
 * changed). A session in a final state never goes back to an active state: a stale list
 * response arriving after an ENDED event must not resurrect it.
 */
export function upsertSession(sessions, incoming) {
  const out = new Map(sessions);
  const prev = out.get(incoming.id);
  if (prev && isFinal(prev.state) && !isFinal(incoming.state)) return out;
  out.set(incoming.id, { ...prev, ...incoming });
  return out;
}

/** Replaces the collection with a fresh list, keeping final states sticky. */
export function mergeSessionList(sessions, list) {
  const out = new Map();
  for (const s of list) {
    const prev = sessions.get(s.id);
    out.set(s.id, prev && isFinal(prev.state) && !isFinal(s.state) ? prev : s);
  }
  // A session missing from the list is dropped when it is over (expired on the server),
  // kept when active: it was created (and announced by an event) after the list was read.
  for (const [id, s] of sessions) if (!out.has(id) && isActive(s.state)) out.set(id, s);
  return out;
}

function ts(value) {
  const t = value ? Date.parse(value) : NaN;
  return Number.isNaN(t) ? null : t;
}

/** Active sessions first (newest first), then ended ones (most recently ended first). */
export function sortSessions(list) {
  return [...list].sort((a, b) => {
    const fa = isFinal(a.state) ? 1 : 0;
    const fb = isFinal(b.state) ? 1 : 0;
    if (fa !== fb) return fa - fb;
    const ka = (fa ? ts(a.ended_at) : null) ?? ts(a.created_at) ?? 0;
    const kb = (fb ? ts(b.ended_at) : null) ?? ts(b.created_at) ?? 0;
    return kb - ka;
  });
}

export function countActive(list) {
  return list.filter((s) => isActive(s.state)).length;
}

// ---------------------------------------------------------------------------------
// Durations and time left

/** "45 s", "3 min 05 s", "2 h 07 min", "3 d 04 h"; negative → "0 s". */
export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "";
  let s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s} s`;
  const pad = (n) => String(n).padStart(2, "0");
  if (s < 3600) return `${Math.floor(s / 60)} min ${pad(s % 60)} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${pad(Math.floor((s % 3600) / 60))} min`;
  return `${Math.floor(s / 86400)} d ${pad(Math.floor((s % 86400) / 3600))} h`;
}

/**
 * Seconds left before Slurm's time limit ends the desktop, or null when unknown (not
 * started yet, no limit, or the session is over). The limit counts from the job's start.
 */
export function timeLeftSeconds(session, nowMs) {
  if (!session || isFinal(session.state) || session.state === "STOPPING") return null;
  const ends = ts(session.ends_at); // Slurm's own end time (moves when the desktop is extended)
  if (ends !== null) return Math.max(0, Math.floor((ends - nowMs) / 1000));
  const start = ts(session.started_at);
  const limit = Number(session.time_limit_minutes);
  if (start === null || !Number.isFinite(limit) || limit <= 0) return null;
  return Math.max(0, Math.floor((start + limit * 60000 - nowMs) / 1000));
}

/** Short text for the session card: "1 h 12 min left", "limit 60 min", "" */
export function timeLeftText(session, nowMs) {
  const left = timeLeftSeconds(session, nowMs);
  if (left !== null) return `${formatDuration(left)} left`;
  if (session && isActive(session.state) && Number(session.time_limit_minutes) > 0) {
    return `time limit ${formatDuration(Number(session.time_limit_minutes) * 60)}`;
  }
  return "";
}

/** Warning level for the time left: "ok", "soon" (< 10 min), "critical" (< 2 min). */
export function timeLeftLevel(seconds) {
  if (seconds === null || seconds === undefined) return "ok";
  if (seconds < 120) return "critical";
  if (seconds < 600) return "soon";
  return "ok";
}

// ---------------------------------------------------------------------------------
// Start-up steps: queued in Slurm (reason) → starting on node X → desktop ready

/**
 * The steps shown while a desktop starts. Each: {key, label, detail, status, seconds}
 * with status "done" | "active" | "todo" | "failed" and seconds the time spent in it
 * (for the active step: so far). Also returns the total elapsed time since submission.
 */
export function startSteps(session, nowMs) {
  const created = ts(session.created_at);
  const started = ts(session.started_at);
  const ready = ts(session.ready_at);
  const ended = ts(session.ended_at);
  const state = session.state;
  const failed = state === "FAILED";
  const stopped = state === "ENDED" || state === "STOPPING";
  const end = ended ?? nowMs;
  const secs = (a, b) => (a === null || b === null ? null : Math.max(0, (b - a) / 1000));

  let phase; // index of the step the session is in
  if (state === "PENDING") phase = 0;
  else if (state === "STARTING") phase = 1;
  else if (state === "READY") phase = 2;
  else phase = ready !== null ? 2 : started !== null ? 1 : 0; // STOPPING/ENDED/FAILED

  const reason = session.reason ? String(session.reason) : "";
  let queuedDetail = "";
  if (state === "PENDING") {
    const words = session.queue_reason ? String(session.queue_reason) : "";
    queuedDetail = words ? `Slurm: ${words}` : reason ? `Slurm: ${reason}` : "waiting for Slurm";
    const expected = ts(session.expected_start_at);
    if (expected !== null) queuedDetail += `; expected start ${new Date(expected).toLocaleString()}`;
  }
  const nodeText = session.node ? `on node ${session.node}` : "on a node";
  const steps = [
    {
      key: "queued",
      label: "Queued in Slurm",
      detail: queuedDetail + (session.job_id && state === "PENDING" ? ` (job ${session.job_id})` : ""),
      seconds: secs(created, started ?? (phase === 0 ? end : null)),
    },
    {
      key: "starting",
      label: `Starting ${nodeText}`,
      detail: state === "STARTING" ? "desktop server starting" : "",
      seconds: secs(started, ready ?? (phase === 1 ? end : null)),
    },
    {
      key: "ready",
      label: "Desktop ready",
      detail: "",
      seconds: null,
    },
  ];
  steps.forEach((step, i) => {
    if (i < phase) step.status = "done";
    else if (i > phase) step.status = "todo";
    else if (failed) step.status = "failed";
    else if (stopped) step.status = i === 2 ? "done" : "stopped";
    else step.status = i === 2 ? "done" : "active";
  });
  if (failed) steps[phase].detail = reason || "failed";
  const total = secs(created, ready ?? end);
  return { steps, elapsedSeconds: total, phase };
}

/** One-line progress text (for the screen reader live region and compact displays). */
export function progressText(session, nowMs) {
  const { steps, elapsedSeconds } = startSteps(session, nowMs);
  const current = steps.find((s) => s.status === "active" || s.status === "failed") ?? steps[2];
  const detail = current.detail ? ` — ${current.detail}` : "";
  return `${current.label}${detail} (${formatDuration(elapsedSeconds)} elapsed)`;
}

// ---------------------------------------------------------------------------------
// Errors a person can act on

/** Seconds from a Retry-After header (delta-seconds or HTTP date), or null. */
export function parseRetryAfter(value, nowMs = Date.now()) {
  if (value === null || value === undefined || value === "") return null;
  const v = String(value).trim();
  if (/^\d+$/.test(v)) return Number(v);
  const t = Date.parse(v);
  if (Number.isNaN(t)) return null;
  return Math.max(0, Math.ceil((t - nowMs) / 1000));
}

/**
 * Turns an HTTP error (status, parsed JSON body or null, Retry-After header) into
 * `{kind, message, code, field, retryAfter, signIn}` for the page. `signIn` says the
 * token is no longer good and the sign-in form must be shown again.
 */
export function describeError(status, body, retryAfterHeader = null, nowMs = Date.now()) {
  const err = body && typeof body === "object" && body.error && typeof body.error === "object" ? body.error : {};
  const code = typeof err.code === "string" ? err.code : "";
  const serverMessage = typeof err.message === "string" ? err.message : "";
  const field = typeof err.field === "string" ? err.field : null;
  const base = { code, field, retryAfter: null, signIn: false, status };
  if (status === 0) {
    return {
      ...base,
      kind: "network",
      message: "Cannot reach the vizdesk service. Check your connection; the page retries by itself.",
    };
  }
  if (status === 401) {
    const expired = /expir/i.test(code) || /expir/i.test(serverMessage);
    return {
      ...base,
      kind: "auth",
      signIn: true,
      message: expired
        ? "Your sign-in token has expired. Sign in again."
        : `Your sign-in token was not accepted${serverMessage ? ` (${serverMessage})` : ""}. Sign in again.`,
    };
  }
  if (status === 403) {
    if (code === "policy_violation") {
      return {
        ...base,
        kind: "policy",
        message: `Not allowed by your group's policy: ${serverMessage || "a limit was exceeded"}.`,
      };
    }
    return {
      ...base,
      kind: "forbidden",
      message: serverMessage ? `Access denied: ${serverMessage}` : "Access denied.",
    };
  }
  if (status === 429) {
    const retryAfter = parseRetryAfter(retryAfterHeader, nowMs);
    const wait = retryAfter !== null ? ` Try again in ${formatDuration(retryAfter)}.` : " Try again shortly.";
    return { ...base, kind: "rate", retryAfter, message: `Too many requests.${wait}` };
  }
  if (status === 400 || status === 413 || status === 422) {
    const where = field ? ` (${field})` : "";
    return { ...base, kind: "validation", message: `Invalid request${where}: ${serverMessage || "check the form"}.` };
  }
  if (status === 404) {
    return { ...base, kind: "notfound", message: serverMessage || "Not found (it may have ended and expired)." };
  }
  if (status === 409) {
    return { ...base, kind: "conflict", message: serverMessage || "The desktop is not ready yet." };
  }
  if (status === 503) {
    return {
      ...base,
      kind: "unavailable",
      message: serverMessage
        ? `Service unavailable: ${serverMessage}`
        : "The scheduler or the service is unreachable right now. Running desktops keep running.",
    };
  }
  return {
    ...base,
    kind: "server",
    message: `The vizdesk service had a problem (HTTP ${status})${serverMessage ? `: ${serverMessage}` : ""}.`,
  };
}

/**
 * Banner for the service state from /readyz and `status` events.
 * Returns null (all good) or {level, message}.
 */
export function healthBanner({ slurm, redis, reachable = true } = {}) {
  if (!reachable) {
    return { level: "error", message: "Cannot reach the vizdesk service. Retrying…" };
  }
  if (slurm === false || slurm === "unreachable") {
    return {
      level: "warning",
      message: "The scheduler (Slurm) is unreachable. Your desktops keep running; new desktops cannot start until it is back.",
    };
  }
  if (redis === false) {
    return { level: "error", message: "The vizdesk service is degraded (state store unreachable). Retrying…" };
  }
  return null;
}

// ---------------------------------------------------------------------------------
// Sign-in token handling

/**
 * Reads `token=` from a URL fragment such as "#token=abc&x=1". Returns
 * `{token, rest}` where rest is the fragment without the token ("" when nothing is left).
 */
export function tokenFromFragment(hash) {
  const raw = (hash ?? "").replace(/^#/, "");
  if (!raw) return { token: null, rest: "" };
  const parts = raw.split("&");
  let token = null;
  const rest = [];
  for (const part of parts) {
    if (part.startsWith("token=")) {
      const value = part.slice(6);
      try {
        token = decodeURIComponent(value) || null;
      } catch {
        token = value || null;
      }
    } else if (part) {
      rest.push(part);
    }
  }
  return { token, rest: rest.length ? `#${rest.join("&")}` : "" };
}

function base64UrlDecode(segment) {
  let s = segment.replace(/-/g, "+").replace(/_/g, "/");
  while (s.length % 4) s += "=";
  const bin = atob(s);
  const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
  return new TextDecoder().decode(bytes);
}

/**
 * Decodes (does NOT verify: the server does) the claims of a JWT, for display and to
 * warn before it expires. Returns null for something that is not a JWT.
 */
export function jwtClaims(token) {
  if (typeof token !== "string") return null;
  const parts = token.trim().split(".");
  if (parts.length !== 3 || !parts[1]) return null;
  try {
    const claims = JSON.parse(base64UrlDecode(parts[1]));
    return claims && typeof claims === "object" ? claims : null;
  } catch {
    return null;
  }
}

/** Cleans a pasted token (whitespace, a leading "Bearer "); null when it is not a JWT. */
export function normalizeToken(input) {
  if (typeof input !== "string") return null;
  const t = input.trim().replace(/^bearer\s+/i, "").replace(/\s+/g, "");
  return jwtClaims(t) ? t : null;
}

/** Seconds until the token's `exp` (negative when past), or null without `exp`. */
export function tokenSecondsLeft(token, nowMs) {
  const claims = jwtClaims(token);
  if (!claims || typeof claims.exp !== "number") return null;
  return Math.floor(claims.exp - nowMs / 1000);
}

// ---------------------------------------------------------------------------------
// Launch form

const ANY = "*";

function clampInt(value, min, max) {
  const n = Math.floor(Number(value));
  if (!Number.isFinite(n)) return min;
  return Math.min(max, Math.max(min, n));
}

/**
 * Builds the launch form model from /api/v1/me's policy and the image catalog
 * (null when the catalog endpoint is absent). Partitions / images lists may contain "*"
 * (anything allowed): then the partition is a free field and every catalog image is offered.
 * `defaults` ({cpus, memory_gb, gpus, time_limit_minutes}) and `defaultPartition` come from
 * /api/v1/me too when the daemon sends them; values are clamped to the policy.
 */
export function launchFormModel(policy, catalog, defaults = null, defaultPartition = null) {
  const p = policy ?? {};
  const partitions = Array.isArray(p.partitions) ? p.partitions : [ANY];
  const anyPartition = partitions.includes(ANY);
  const allowedImages = Array.isArray(p.images) ? p.images : [ANY];
  const anyImage = allowedImages.includes(ANY);
  let images = null;
  if (Array.isArray(catalog)) {
    images = catalog
      .filter((img) => img && (anyImage || allowedImages.includes(img.id) || allowedImages.includes(img.name)))
      .sort((a, b) => {
        const va = a.kind === "viz" ? 0 : 1;
        const vb = b.kind === "viz" ? 0 : 1;
        return va - vb || String(a.name ?? a.id).localeCompare(String(b.name ?? b.id));
      })
      .map((img) => ({
        value: img.id,
        label: img.name && img.name !== img.id ? img.name : img.id,
        description: img.description ?? "",
        kind: img.kind ?? "",
      }));
  }
  const maxCpus = Math.max(1, Number(p.max_cpus) || 1);
  const maxMem = Math.max(1, Number(p.max_memory_gb) || 1);
  const maxGpus = Math.max(0, Number(p.max_gpus) || 0);
  const maxTime = Math.max(1, Number(p.max_time_limit_minutes) || 60);
  const d = defaults ?? {};
  const initial = (name, fallback, min, max) =>
    clampInt(Number.isFinite(Number(d[name])) && d[name] !== null ? d[name] : fallback, min, max);
  const offered = anyPartition ? null : partitions;
  let partition = "";
  if (offered) partition = offered.includes(defaultPartition) ? defaultPartition : (offered[0] ?? "");
  return {
    partitions: offered,
    partition,
    images,
    cpus: { min: 1, max: maxCpus, value: initial("cpus", 2, 1, maxCpus) },
    memory_gb: { min: 1, max: maxMem, value: initial("memory_gb", 4, 1, maxMem) },
    gpus: { min: 0, max: maxGpus, value: initial("gpus", 0, 0, maxGpus) },
    time_limit_minutes: { min: 1, max: maxTime, value: initial("time_limit_minutes", 60, 1, maxTime) },
    max_sessions: Number(p.max_sessions) || null,
  };
}

/** "WxH" that fits a browser area (even numbers, at least 640x480, at most the maximum). */
export function fitGeometry(width, height, maxWidth = 7680, maxHeight = 4320) {
  const w = clampInt(width, 640, maxWidth) & ~1;
  const h = clampInt(height, 480, maxHeight) & ~1;
  return `${w}x${h}`;
}

/**
 * Validates the form values against the model and returns `{body, errors}`; `errors`
 * maps field → message (empty when valid). Empty optional fields are left out so the
 * daemon's defaults apply.
 */
export function buildLaunchRequest(values, model) {
  const body = {};
  const errors = {};
  const intField = (name, label) => {
    const raw = values[name];
    if (raw === undefined || raw === null || String(raw).trim() === "") return;
    const n = Number(raw);
    const lim = model[name];
    if (!Number.isInteger(n)) errors[name] = `${label}: a whole number`;
    else if (n < lim.min || n > lim.max) errors[name] = `${label}: between ${lim.min} and ${lim.max}`;
    else body[name] = n;
  };
  intField("cpus", "CPUs");
  intField("memory_gb", "Memory (GB)");
  intField("gpus", "GPUs");
  intField("time_limit_minutes", "Time limit (minutes)");
  const partition = String(values.partition ?? "").trim();
  if (partition) {
    if (model.partitions && !model.partitions.includes(partition)) errors.partition = "Partition: not allowed";
    else if (!/^[A-Za-z0-9_.-]{1,64}$/.test(partition)) errors.partition = "Partition: letters, digits, . _ -";
    else body.partition = partition;
  }
  const image = String(values.image ?? "").trim();
  if (image) {
    if (model.images && !model.images.some((i) => i.value === image)) errors.image = "Image: not allowed";
    else body.image = image;
  }
  const geometry = String(values.geometry ?? "").trim();
  if (geometry) {
    if (!/^\d{3,5}x\d{3,5}$/.test(geometry)) errors.geometry = "Screen size: WIDTHxHEIGHT";
    else body.geometry = geometry;
  }
  return { body, errors };
}

// ---------------------------------------------------------------------------------
// Desktop connection

/** ws(s):// URL for a ws_path from /connect, on the page's own host. */
export function websocketUrl(pageLocation, wsPath) {
  const scheme = pageLocation.protocol === "https:" ? "wss:" : "ws:";
  const path = wsPath.startsWith("/") ? wsPath : `/${wsPath}`;
  return `${scheme}//${pageLocation.host}${path}`;
}

/**
 * Message shown when the desktop connection closes. `session` is the freshest known
 * session object (or null), `clean` the noVNC disconnect flag, `userAsked` whether the
 * user pressed disconnect, `gaveUp` whether the automatic reconnect gave up.
 */
export function disconnectMessage({ session, clean, userAsked, securityFailure, gaveUp = false }) {
  if (securityFailure) {
    return {
      canReconnect: true,
      message: `The desktop refused the connection (${securityFailure}). Reconnect to get a fresh ticket.`,
    };
  }
  if (session && isFinal(session.state)) {
    const why = session.reason ? `: ${session.reason}` : "";
    return {
      canReconnect: false,
      message: session.state === "FAILED" ? `The desktop failed${why}.` : `The desktop session has ended${why}.`,
    };
  }
  if (session && session.state === "STOPPING") {
    return { canReconnect: false, message: "The desktop is being stopped." };
  }
  if (userAsked) {
    return { canReconnect: true, message: "Disconnected. The desktop keeps running; reconnect at any time." };
  }
  if (gaveUp) {
    return {
      canReconnect: true,
      message: "The connection to the desktop could not be restored for 2 minutes. Your desktop may still be running; press Reconnect to try again.",
    };
  }
  if (clean) {
    return { canReconnect: true, message: "The connection to the desktop was closed. The desktop may still be running." };
  }
  return {
    canReconnect: true,
    message: "The connection to the desktop dropped. Your desktop keeps running; reconnect to continue.",
  };
}
