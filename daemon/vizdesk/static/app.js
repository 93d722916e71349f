// vizdesk portal: the page's DOM glue. Sign-in (pasted JWT or #token= from the site's
// portal, kept in sessionStorage), launch form from the user's policy, live session
// list from the /api/v1/events stream, start-up steps, and the noVNC desktop view.
// Pure logic lives in state.js (unit-tested), network calls in api.js.

import { Api, ApiError } from "./api.js";
import { estimateText, extendStepMinutes, scopeText, sharedTitle, shareIdFromSearch, viewerEventText, warningBanner } from "./awareness.js";
import { Batch } from "./batch.js";
import { DesktopConnection } from "./desktop.js";
import { Backoff } from "./reconnect.js";
import { SharePanel } from "./sharing.js";
import {
  TOKEN_STORAGE_KEY,
  buildLaunchRequest,
  canOpen,
  canStop,
  countActive,
  disconnectMessage,
  fitGeometry,
  formatDuration,
  healthBanner,
  isActive,
  isFinal,
  jwtClaims,
  launchFormModel,
  mergeSessionList,
  normalizeToken,
  progressText,
  sortSessions,
  startSteps,
  stateLabel,
  timeLeftLevel,
  timeLeftSeconds,
  timeLeftText,
  tokenFromFragment,
  tokenSecondsLeft,
  upsertSession,
} from "./state.js";

const $ = (id) => document.getElementById(id);

const page = {
  token: null,
  me: null,
  model: null,
  sessions: new Map(),
  health: { reachable: true, slurm: true, redis: true },
  view: "loading",
  autoOpenId: null, // the desktop just launched: opened as soon as it is READY
  desktopId: null,
  eventsAbort: null,
  // the events stream's reconnect schedule (reconnect.js): first retry after 0.25 s, at
  // most every 4 s, never giving up (a request every 4 s costs nothing)
  eventsBackoff: new Backoff({ giveUpMs: null }),
  eventsEverLive: false, // the stream was live once since sign-in: a drop is "reconnecting…"
  eventsMode: "off", // off | connecting | reconnecting | live | polling
  pollTimer: null,
  healthTimer: null,
  tickTimer: null,
  stopConfirm: new Map(), // session id → timeout of the "Confirm stop" state
  launching: false,
  renewing: false, // a pasted / handed-over token is being checked
  tokenExpired: false, // past exp: the page waits for a new token (desktop and uploads go on)
  shared: null, // {shareId, info}: this tab shows someone else's desktop through a link
  shareTried: false, // the ?share= of the URL was opened once (not again on every route)
  warnings: new Map(), // key → banner model (awareness.js warningBanner)
  thumbs: new Map(), // session id → {at, busy} of its last thumbnail request
};
const THUMBNAIL_INTERVAL_MS = 10000; // the daemon grabs at most one per sessions.thumbnail_interval_seconds

const api = new Api(() => page.token, onAuthLost);
let desktop = null;
let sharePanel = null;
const batch = new Batch({
  api,
  getToken: () => page.token,
  getMe: () => page.me,
  showView: (name) => showView(name),
  announce: (text) => announce(text),
  showError: (text) => showError(text),
});

const VIEWS = {
  signin: "signin-view",
  portal: "portal-view",
  desktop: "desktop-view",
  library: "library-view",
  jobform: "jobform-view",
  jobs: "jobs-view",
  job: "job-view",
};
const NAV_OF = { portal: "desktops", desktop: "desktops", library: "templates", jobform: "templates", jobs: "jobs", job: "jobs" };

// ------------------------------------------------------------------------------
// Views and banners

function showView(name) {
  page.view = name;
  const titles = {
    signin: "Sign in",
    portal: "Your desktops",
    desktop: "Desktop",
    library: "Job templates",
    jobform: "New job",
    jobs: "Batch jobs",
    job: "Batch job",
  };
  document.title = `${titles[name] ?? ""} — vizdesk`;
  $("loading").hidden = true;
  for (const [view, id] of Object.entries(VIEWS)) $(id).hidden = name !== view;
  document.body.classList.toggle("desktop-mode", name === "desktop");
  const signedIn = name !== "signin" && name !== "loading";
  $("sign-out").hidden = !signedIn;
  $("user-info").hidden = !signedIn;
  $("health-indicator").hidden = !signedIn;
  $("main-nav").hidden = !signedIn;
  for (const a of $("main-nav").querySelectorAll("a")) {
    if (a.dataset.nav === NAV_OF[name]) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

function showError(message) {
  $("error-text").textContent = message;
  $("error-banner").hidden = !message;
}

function clearError() {
  showError("");
}

function renderHealth() {
  const banner = healthBanner(page.health);
  const el = $("health-banner");
  el.hidden = !banner || page.view === "signin";
  el.textContent = banner ? banner.message : "";
  el.className = `banner banner-${banner?.level ?? "warning"}`;
  const ind = $("health-indicator");
  ind.textContent = banner ? (banner.level === "error" ? "Service unreachable" : "Scheduler unreachable") : "Online";
  ind.className = `health ${banner ? banner.level : "ok"}`;
}

// ------------------------------------------------------------------------------
// Sign-in

function storedToken() {
  try {
    return sessionStorage.getItem(TOKEN_STORAGE_KEY);
  } catch {
    return null;
  }
}

function storeToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_STORAGE_KEY, token);
    else sessionStorage.removeItem(TOKEN_STORAGE_KEY);
  } catch {
    /* storage disabled: the token lives in memory only */
  }
}

function showSignIn(reason) {
  stopBackground();
  page.token = null;
  showView("signin");
  const r = $("signin-reason");
  r.hidden = !reason;
  r.textContent = reason ?? "";
  $("token-input").value = "";
  $("token-error").hidden = true;
  $("token-input").focus();
  renderHealth();
}

function signOut(reason = null) {
  if (desktop) desktop.close(false);
  storeToken(null);
  page.sessions = new Map();
  page.me = null;
  page.desktopId = null;
  page.autoOpenId = null;
  $("session-list").replaceChildren();
  clearError();
  $("token-banner").hidden = true;
  page.tokenExpired = false;
  batch.reset();
  showSignIn(reason);
}

/**
 * A 401: a token that merely expired while something is open (a desktop, an upload, a
 * job page) asks for a new one in place; any other refusal signs out as before.
 */
function onAuthLost(info) {
  if (page.renewing) return; // the renewal form reports it
  const left = tokenSecondsLeft(page.token, Date.now());
  const expired = (left !== null && left <= 5) || /expir/i.test(info.code ?? "") || /expired/i.test(info.message ?? "");
  if (expired && page.view !== "signin" && page.view !== "loading" && page.me) {
    showRenewal(true);
    return;
  }
  signOut(info.message);
}

function showRenewal(expired) {
  const tb = $("token-banner");
  const left = tokenSecondsLeft(page.token, Date.now());
  page.tokenExpired = expired || (left !== null && left <= 0);
  $("token-banner-text").textContent = page.tokenExpired
    ? "Your sign-in token has expired. Open desktops and uploads in progress keep going: paste a new token (or open the link from your portal) to continue."
    : `Your sign-in expires in ${formatDuration(left ?? 0)}. Paste a new token to continue without interruption; your desktops and uploads keep going.`;
  tb.className = `banner ${page.tokenExpired ? "banner-error" : "banner-warning"}`;
  if (tb.hidden) {
    tb.hidden = false;
    announce($("token-banner-text").textContent);
  }
}

/** Takes a new token in place: same user, not expired, accepted by the server. */
async function renewToken(raw) {
  const err = $("renew-error");
  const token = normalizeToken(raw);
  const fail = (msg) => {
    err.textContent = msg;
    err.hidden = false;
    $("renew-input").setAttribute("aria-invalid", "true");
    return false;
  };
  if (!token) return fail("That does not look like an access token (three dot-separated parts).");
  const claims = jwtClaims(token) ?? {};
  const left = tokenSecondsLeft(token, Date.now());
  if (left !== null && left <= 0) return fail("That token has expired already.");
  if (page.me?.user && claims.sub && claims.sub !== page.me.user) {
    return fail(`That token is for ${claims.sub}, not ${page.me.user}. Sign out first to switch users.`);
  }
  const old = page.token;
  page.renewing = true;
  page.token = token;
  try {
    const me = await api.me();
    if (page.me?.user && me.user && me.user !== page.me.user) {
      page.token = old;
      return fail(`That token is for ${me.user}, not ${page.me.user}.`);
    }
    page.me = { ...page.me, ...me };
  } catch (exc) {
    page.token = old;
    return fail(exc instanceof ApiError ? exc.message : String(exc));
  } finally {
    page.renewing = false;
  }
  storeToken(token);
  page.tokenExpired = false;
  err.hidden = true;
  $("renew-input").value = "";
  $("renew-input").removeAttribute("aria-invalid");
  $("token-banner").hidden = true;
  // the desktop's websocket needs no token; uploads parked on a 401 go on from their offset
  batch.uploads.tokenRenewed();
  if (page.eventsMode !== "live") startBackground();
  performance.mark("vizdesk:token-renewed");
  announce("Signed in with the new token");
  return true;
}

async function signIn(token) {
  const left = tokenSecondsLeft(token, Date.now());
  if (left !== null && left <= 0) {
    storeToken(null);
    showSignIn("Your sign-in token has expired. Sign in again.");
    return;
  }
  page.token = token;
  storeToken(token);
  clearError();
  $("loading").hidden = false;
  try {
    await loadPortal();
  } catch (exc) {
    if (exc instanceof ApiError && exc.info.signIn) return; // onAuthLost showed sign-in
    $("loading").hidden = true;
    showView("portal");
    showError(exc instanceof ApiError ? exc.message : `Could not load the portal: ${exc}`);
  }
}

function onSignInSubmit(ev) {
  ev.preventDefault();
  const token = normalizeToken($("token-input").value);
  const err = $("token-error");
  if (!token) {
    err.textContent = "That does not look like an access token (three dot-separated parts).";
    err.hidden = false;
    $("token-input").setAttribute("aria-invalid", "true");
    $("token-input").focus();
    return;
  }
  $("token-input").removeAttribute("aria-invalid");
  err.hidden = true;
  signIn(token);
}

// ------------------------------------------------------------------------------
// Portal: launch form, sessions

async function loadPortal() {
  let me;
  try {
    me = await api.me();
  } catch (exc) {
    if (!(exc instanceof ApiError) || exc.status !== 404) throw exc;
    // /api/v1/me missing (older daemon): offer the form without known limits
    const claims = jwtClaims(page.token) ?? {};
    me = { user: claims.sub ?? "", groups: [], policy: null };
  }
  page.me = me;
  let catalog = null;
  try {
    catalog = await api.images();
  } catch (exc) {
    if (exc instanceof ApiError && exc.info.signIn) throw exc;
    catalog = null; // no image choice; the daemon's default image is used
  }
  const policy = me.policy ?? {
    partitions: ["*"],
    images: ["*"],
    max_cpus: 64,
    max_memory_gb: 1024,
    max_gpus: 8,
    max_time_limit_minutes: 7 * 24 * 60,
    max_sessions: null,
  };
  page.model = launchFormModel(policy, catalog, me.defaults ?? null, me.default_partition ?? null);
  renderUser();
  fillLaunchForm(page.model);
  const list = await api.listSessions();
  page.sessions = mergeSessionList(page.sessions, list);
  showView("portal");
  renderSessions();
  startBackground();
  await applyRoute();
  const shareId = shareIdFromSearch(window.location.search);
  if (shareId && !page.shareTried) {
    page.shareTried = true;
    await openShared(shareId);
  }
  renderNotifyButton();
  performance.mark("vizdesk:interactive");
}

/** The route in the URL fragment: "#/jobs/abc" → ["jobs", "abc"] ([] for the desktops). */
function routeParts() {
  const { rest } = tokenFromFragment(window.location.hash);
  const h = rest.replace(/^#\/?/, "");
  return h ? h.split("/").filter(Boolean) : [];
}

async function applyRoute() {
  if (!page.me || page.view === "signin") return;
  const parts = routeParts();
  if (page.view === "desktop" && (page.shared || !parts.length || parts[0] === "desktops")) return;
  if (page.view === "desktop") leaveDesktop(false);
  if (parts.length && (await batch.route(parts))) return;
  batch.closeJob();
  showView("portal");
  renderSessions();
}

function renderUser() {
  const me = page.me ?? {};
  const el = $("user-info");
  const groups = Array.isArray(me.groups) && me.groups.length ? ` (${me.groups.join(", ")})` : "";
  el.textContent = `${me.user ?? ""}${me.is_admin ? " · admin" : ""}`;
  el.title = `Signed in as ${me.user ?? "?"}${groups}`;
}

function setLimit(inputId, helpId, lim, unit) {
  const input = $(inputId);
  input.min = String(lim.min);
  input.max = String(lim.max);
  input.value = String(lim.value);
  $(helpId).textContent = `${lim.min}–${lim.max}${unit}`;
}

function fillLaunchForm(model) {
  // images
  const imageField = $("image-field");
  const imageSelect = $("launch-image");
  imageSelect.replaceChildren();
  if (model.images && model.images.length) {
    for (const img of model.images) {
      const opt = document.createElement("option");
      opt.value = img.value;
      opt.textContent = img.kind ? `${img.label} (${img.kind})` : img.label;
      opt.dataset.description = img.description;
      imageSelect.append(opt);
    }
    imageField.hidden = false;
    describeImage();
  } else {
    imageField.hidden = true;
  }
  // partitions
  const select = $("launch-partition-select");
  const input = $("launch-partition");
  const label = document.querySelector('label[for="launch-partition"], label[for="launch-partition-select"]');
  if (model.partitions && model.partitions.length) {
    select.replaceChildren();
    for (const p of model.partitions) {
      const opt = document.createElement("option");
      opt.value = p;
      opt.textContent = p;
      select.append(opt);
    }
    select.value = model.partition;
    select.hidden = false;
    input.hidden = true;
    label.htmlFor = "launch-partition-select";
    $("launch-partition-help").textContent = "Partitions your groups may use.";
  } else {
    select.hidden = true;
    input.hidden = false;
    input.placeholder = page.me?.default_partition ? `default: ${page.me.default_partition}` : "cluster default";
    label.htmlFor = "launch-partition";
  }
  setLimit("launch-cpus", "launch-cpus-help", model.cpus, "");
  setLimit("launch-memory", "launch-memory-help", model.memory_gb, " GB");
  setLimit("launch-gpus", "launch-gpus-help", model.gpus, "");
  if (model.gpus.max === 0) {
    $("launch-gpus").disabled = true;
    $("launch-gpus-help").textContent = "Your groups have no GPU allowance.";
  } else {
    $("launch-gpus").disabled = false;
  }
  setLimit("launch-time", "launch-time-help", model.time_limit_minutes, " min");
  $("launch-time-help").textContent = `up to ${formatDuration(model.time_limit_minutes.max * 60)}`;
  renderQuota();
}

function describeImage() {
  const opt = $("launch-image").selectedOptions[0];
  $("launch-image-desc").textContent = opt?.dataset.description ?? "";
}

function renderQuota() {
  const active = countActive([...page.sessions.values()]);
  const max = page.model?.max_sessions;
  const quota = $("launch-quota");
  const button = $("launch-button");
  if (max) {
    quota.textContent = `${active} of ${max} desktops in use`;
    const full = active >= max;
    button.disabled = full || page.launching;
    if (full) quota.textContent += " — stop one to launch another";
  } else {
    quota.textContent = active ? `${active} running` : "";
    button.disabled = page.launching;
  }
}

function launchValues() {
  const partitionSelect = $("launch-partition-select");
  const geometryChoice = $("launch-geometry").value;
  let geometry = geometryChoice;
  if (geometryChoice === "fit") {
    // the desktop area is the window minus the toolbar (about 48 px)
    geometry = fitGeometry(window.innerWidth, window.innerHeight - 48);
  }
  return {
    image: $("image-field").hidden ? "" : $("launch-image").value,
    partition: partitionSelect.hidden ? $("launch-partition").value : partitionSelect.value,
    cpus: $("launch-cpus").value,
    memory_gb: $("launch-memory").value,
    gpus: $("launch-gpus").disabled ? "" : $("launch-gpus").value,
    time_limit_minutes: $("launch-time").value,
    geometry,
  };
}

async function onLaunchSubmit(ev) {
  ev.preventDefault();
  if (page.launching) return;
  const { body, errors } = buildLaunchRequest(launchValues(), page.model);
  const errEl = $("launch-errors");
  for (const id of ["launch-cpus", "launch-memory", "launch-gpus", "launch-time", "launch-partition"]) {
    $(id).removeAttribute("aria-invalid");
  }
  const fieldIds = {
    cpus: "launch-cpus",
    memory_gb: "launch-memory",
    gpus: "launch-gpus",
    time_limit_minutes: "launch-time",
    partition: "launch-partition",
  };
  if (Object.keys(errors).length) {
    errEl.textContent = Object.values(errors).join(". ");
    errEl.hidden = false;
    const first = fieldIds[Object.keys(errors)[0]];
    if (first) {
      $(first).setAttribute("aria-invalid", "true");
      $(first).focus();
    }
    return;
  }
  errEl.hidden = true;
  clearError();
  page.launching = true;
  $("launch-button").textContent = "Launching…";
  renderQuota();
  performance.mark("vizdesk:launch-click");
  try {
    const session = await api.createSession(body);
    page.sessions = upsertSession(page.sessions, session);
    page.autoOpenId = session.id;
    renderSessions();
    document.querySelector(`[data-session-id="${CSS.escape(session.id)}"]`)?.scrollIntoView({ block: "nearest" });
    maybeAutoOpen(session);
  } catch (exc) {
    if (exc instanceof ApiError) {
      if (!exc.info.signIn) {
        errEl.textContent = exc.message;
        errEl.hidden = false;
        const fid = fieldIds[exc.info.field];
        if (fid) $(fid).setAttribute("aria-invalid", "true");
      }
    } else {
      errEl.textContent = `Could not launch: ${exc}`;
      errEl.hidden = false;
    }
  } finally {
    page.launching = false;
    $("launch-button").textContent = "Launch desktop";
    renderQuota();
  }
}

function sessionTitle(s) {
  const image = s.image ? ` · ${s.image}` : "";
  return `Desktop ${s.id.slice(0, 8)}${image}`;
}

function sessionMeta(s) {
  const bits = [];
  if (s.node) bits.push(`node ${s.node}`);
  if (s.partition) bits.push(`partition ${s.partition}`);
  if (s.cpus) bits.push(`${s.cpus} CPU${s.cpus === 1 ? "" : "s"}`);
  if (s.memory_gb) bits.push(`${s.memory_gb} GB`);
  if (s.gpus) bits.push(`${s.gpus} GPU${s.gpus === 1 ? "" : "s"}`);
  if (s.geometry) bits.push(s.geometry);
  if (s.job_id) bits.push(`job ${s.job_id}`);
  return bits.join(" · ");
}

function createCard(s) {
  const li = $("session-template").content.firstElementChild.cloneNode(true);
  li.dataset.sessionId = s.id;
  const part = (name) => li.querySelector(`[data-part="${name}"]`);
  part("open").addEventListener("click", () => openDesktop(li.dataset.sessionId));
  part("stop").addEventListener("click", () => onStopClick(li.dataset.sessionId, part("stop")));
  part("share").addEventListener("click", () => {
    openDesktop(li.dataset.sessionId);
    sharePanel.toggle(true);
  });
  part("extend").addEventListener("click", () => extendDesktop(li.dataset.sessionId, part("extend")));
  part("relaunch").addEventListener("click", () => relaunchDesktop(li.dataset.sessionId, part("relaunch")));
  return li;
}

function renderSteps(ol, s, now) {
  const { steps } = startSteps(s, now);
  if (ol.children.length !== steps.length) {
    ol.replaceChildren(
      ...steps.map(() => {
        const li = document.createElement("li");
        const label = document.createElement("span");
        label.className = "step-label";
        const detail = document.createElement("span");
        detail.className = "step-detail";
        const time = document.createElement("span");
        time.className = "step-time";
        li.append(label, detail, time);
        return li;
      }),
    );
  }
  steps.forEach((step, i) => {
    const li = ol.children[i];
    li.className = `step step-${step.status}`;
    li.dataset.step = step.key;
    if (step.status === "active") li.setAttribute("aria-current", "step");
    else li.removeAttribute("aria-current");
    const [label, detail, time] = li.children;
    label.textContent = step.label;
    detail.textContent = step.detail ? ` — ${step.detail}` : "";
    time.textContent = step.seconds !== null ? formatDuration(step.seconds) : "";
  });
}

function updateCard(li, s, now) {
  const part = (name) => li.querySelector(`[data-part="${name}"]`);
  li.dataset.state = s.state;
  li.classList.toggle("final", isFinal(s.state));
  li.classList.toggle("highlight", s.id === page.autoOpenId);
  const badge = part("badge");
  badge.textContent = stateLabel(s.state);
  badge.className = `badge badge-${s.state.toLowerCase()}`;
  part("name").textContent = sessionTitle(s);
  part("meta").textContent = sessionMeta(s);
  const left = timeLeftSeconds(s, now);
  const tl = part("timeleft");
  const starting = s.state === "PENDING" || s.state === "STARTING";
  if (starting) {
    const { elapsedSeconds } = startSteps(s, now);
    tl.textContent = `${formatDuration(elapsedSeconds)} elapsed · ${timeLeftText(s, now)}`;
  } else {
    tl.textContent = timeLeftText(s, now);
  }
  tl.className = `timeleft level-${timeLeftLevel(left)}`;
  const steps = part("steps");
  steps.hidden = !(starting || s.state === "FAILED");
  if (!steps.hidden) renderSteps(steps, s, now);
  const reason = part("reason");
  const showReason = !starting && s.reason && (isFinal(s.state) || s.state === "STOPPING");
  reason.hidden = !showReason;
  reason.textContent = showReason ? s.reason : "";
  part("open").hidden = !canOpen(s);
  part("share").hidden = s.state !== "READY";
  part("share").setAttribute("aria-label", `Share ${sessionTitle(s)}`);
  const step = extendStepMinutes(page.me?.policy);
  const extend = part("extend");
  extend.hidden = !(step && s.state === "READY");
  extend.textContent = `Add ${step} min`;
  extend.setAttribute("aria-label", `Add ${step} min to ${sessionTitle(s)}`);
  const relaunch = part("relaunch");
  relaunch.hidden = !isFinal(s.state);
  relaunch.setAttribute("aria-label", `Relaunch ${sessionTitle(s)} with the same settings`);
  const thumb = part("thumb");
  if (s.state !== "READY") thumb.hidden = true;
  thumb.alt = `Picture of ${sessionTitle(s)}`;
  const stop = part("stop");
  stop.hidden = !canStop(s);
  if (!page.stopConfirm.has(s.id)) stop.textContent = "Stop";
  stop.setAttribute("aria-label", `Stop ${sessionTitle(s)}`);
  part("open").setAttribute("aria-label", `Open ${sessionTitle(s)}`);
}

function renderSessions() {
  const list = $("session-list");
  const now = Date.now();
  const sorted = sortSessions([...page.sessions.values()]);
  // show every active desktop and the 5 most recent ended ones
  let finals = 0;
  const shown = sorted.filter((s) => !isFinal(s.state) || ++finals <= 5);
  const existing = new Map([...list.children].map((li) => [li.dataset.sessionId, li]));
  const wanted = [];
  for (const s of shown) {
    const li = existing.get(s.id) ?? createCard(s);
    updateCard(li, s, now);
    wanted.push(li);
    existing.delete(s.id);
  }
  for (const li of existing.values()) li.remove();
  // reorder without recreating (keeps focus on buttons)
  wanted.forEach((li, i) => {
    if (list.children[i] !== li) list.insertBefore(li, list.children[i] ?? null);
  });
  $("no-sessions").hidden = shown.length > 0;
  renderQuota();
  if (page.view === "desktop") renderDesktopInfo();
}

/** Stop needs two clicks (the second within 5 s): a desktop's unsaved work is lost. */
function onStopClick(id, button) {
  if (!id) return;
  if (!page.stopConfirm.has(id)) {
    const label = button.textContent;
    button.textContent = "Confirm stop";
    announce("Press stop again to confirm");
    page.stopConfirm.set(
      id,
      setTimeout(() => {
        page.stopConfirm.delete(id);
        button.textContent = label;
      }, 5000),
    );
    return;
  }
  button.textContent = button.id === "desktop-stop" ? "Stop desktop" : "Stop";
  clearTimeout(page.stopConfirm.get(id));
  page.stopConfirm.delete(id);
  stopSession(id);
}

async function stopSession(id) {
  clearError();
  if (page.autoOpenId === id) page.autoOpenId = null;
  try {
    const resp = await api.stopSession(id);
    const prev = page.sessions.get(id);
    if (resp && resp.id) page.sessions = upsertSession(page.sessions, resp);
    else if (prev && !isFinal(prev.state)) page.sessions = upsertSession(page.sessions, { ...prev, state: "STOPPING" });
    renderSessions();
  } catch (exc) {
    if (exc instanceof ApiError && exc.info.signIn) return;
    showError(exc instanceof ApiError ? exc.message : `Could not stop the desktop: ${exc}`);
  }
}

function onSessionUpdate(session) {
  const before = page.sessions.get(session.id);
  page.sessions = upsertSession(page.sessions, session);
  const s = page.sessions.get(session.id);
  renderSessions();
  if (before?.state !== s.state) announce(`${sessionTitle(s)}: ${stateLabel(s.state)}`);
  maybeAutoOpen(s);
  if (!isActive(s.state) || s.state === "STOPPING") clearWarnings(s.id);
  if (page.view === "desktop" && page.desktopId === s.id && isFinal(s.state)) {
    desktop?.close(false);
    showOverlay(disconnectMessage({ session: s, clean: true, userAsked: false }));
  }
}

function maybeAutoOpen(s) {
  if (page.autoOpenId !== s.id) return;
  if (s.state === "READY") {
    page.autoOpenId = null;
    performance.mark("vizdesk:session-ready");
    if (page.view === "portal") openDesktop(s.id);
  } else if (isFinal(s.state) || s.state === "STOPPING") {
    page.autoOpenId = null;
    if (s.state === "FAILED") showError(`The desktop could not start: ${s.reason || "unknown reason"}.`);
  }
}

/** Tells screen readers about a change (polite live region). */
function announce(text) {
  $("live-region").textContent = text;
}

// ------------------------------------------------------------------------------
// Background: events stream (or list polling as a fallback), health, ticking clocks

function startBackground() {
  stopBackground();
  page.eventsBackoff.reset();
  page.eventsEverLive = false;
  connectEvents();
  refreshHealth();
  page.healthTimer = setInterval(refreshHealth, 20000);
  page.tickTimer = setInterval(tick, 1000);
}

function stopBackground() {
  page.eventsAbort?.abort();
  page.eventsAbort = null;
  clearTimeout(page.pollTimer);
  clearInterval(page.healthTimer);
  clearInterval(page.tickTimer);
  page.eventsMode = "off";
}

function setEventsState(mode) {
  page.eventsMode = mode;
  const text = {
    live: "live",
    connecting: "connecting…",
    reconnecting: "reconnecting…",
    polling: "refreshing every 5 s",
    off: "",
  }[mode];
  $("events-state").textContent = text ?? "";
  $("events-state").dataset.mode = mode;
}

async function connectEvents() {
  const abort = new AbortController();
  page.eventsAbort = abort;
  setEventsState(page.eventsEverLive ? "reconnecting" : "connecting");
  try {
    await api.streamEvents({
      signal: abort.signal,
      onOpen: () => {
        page.eventsBackoff.connected(Date.now());
        page.eventsEverLive = true;
        setEventsState("live");
        page.health.reachable = true;
        renderHealth();
        // resync: changes that happened while the stream was down
        api.listSessions().then(
          (list) => {
            page.sessions = mergeSessionList(page.sessions, list);
            renderSessions();
            for (const s of page.sessions.values()) maybeAutoOpen(s);
          },
          () => {},
        );
        batch.resync();
      },
      onAction: (action) => {
        if (action.type === "session") onSessionUpdate(action.session);
        else if (action.type === "job") batch.onJobEvent(action.job);
        else if (action.type === "upload") batch.onUploadEvent(action.upload);
        else if (action.type === "viewer") onViewerEvent(action.viewer);
        else if (action.type === "warning") onWarning(action.kind, action.warning);
        else if (action.type === "status") {
          page.health.slurm = action.slurm === "ok";
          renderHealth();
        }
      },
    });
  } catch (exc) {
    if (abort.signal.aborted) return;
    if (exc instanceof ApiError && exc.info.signIn) return;
    if (exc instanceof ApiError && (exc.status === 404 || exc.info.kind === "unsupported")) {
      pollSessions(); // no events endpoint: one list request every 5 s
      return;
    }
    if (exc instanceof ApiError && exc.status === 429) {
      // limits.max_event_streams_per_user: other tabs hold the streams; this one polls
      pollSessions();
      return;
    }
    if (exc instanceof ApiError && exc.status === 0) {
      page.health.reachable = false;
      renderHealth();
    }
  }
  if (abort.signal.aborted || page.eventsAbort !== abort) return;
  // stream ended (the daemon serving it restarted) or failed: reconnect with backoff; the
  // list is fetched again once it is back (onOpen), so no change is missed
  const { delayMs } = page.eventsBackoff.next(Date.now());
  setEventsState(page.eventsEverLive ? "reconnecting" : "connecting");
  page.pollTimer = setTimeout(connectEvents, delayMs);
}

async function pollSessions() {
  setEventsState("polling");
  try {
    const list = await api.listSessions();
    page.sessions = mergeSessionList(page.sessions, list);
    renderSessions();
    for (const s of page.sessions.values()) maybeAutoOpen(s);
    page.health.reachable = true;
  } catch (exc) {
    if (exc instanceof ApiError && exc.info.signIn) return;
    if (exc instanceof ApiError && exc.status === 0) page.health.reachable = false;
  }
  renderHealth();
  if (page.view !== "signin") page.pollTimer = setTimeout(pollSessions, 5000);
}

async function refreshHealth() {
  const h = await api.readiness();
  if (!h.reachable) {
    page.health.reachable = false;
  } else {
    page.health.reachable = true;
    if (typeof h.slurm === "boolean") page.health.slurm = h.slurm;
    if (typeof h.redis === "boolean") page.health.redis = h.redis;
  }
  renderHealth();
}

function tick() {
  if (page.view === "signin") return;
  const now = Date.now();
  for (const li of $("session-list").children) {
    const s = page.sessions.get(li.dataset.sessionId);
    if (s && isActive(s.state)) updateCard(li, s, now);
  }
  if (page.view === "desktop") renderDesktopInfo();
  refreshThumbnails(now);
  batch.tick();
  const left = tokenSecondsLeft(page.token, now);
  if (left !== null && left < RENEW_WARNING_SECONDS) showRenewal(left <= 0);
  else if (!page.tokenExpired) $("token-banner").hidden = true;
}

const RENEW_WARNING_SECONDS = 300; // the renewal banner shows this long before `exp`

// ------------------------------------------------------------------------------
// Desktop view

function renderDesktopInfo() {
  if (page.shared) {
    $("desktop-title").textContent = sharedTitle(page.shared.info);
    $("desktop-title").title = $("desktop-title").textContent;
    document.title = `${sharedTitle(page.shared.info)} — vizdesk`;
    $("desktop-timeleft").textContent = "";
    return;
  }
  const s = page.sessions.get(page.desktopId);
  if (!s) return;
  $("desktop-title").textContent = sessionTitle(s) + (s.node ? ` on ${s.node}` : "");
  $("desktop-title").title = $("desktop-title").textContent;
  document.title = `${sessionTitle(s)} — vizdesk`;
  const now = Date.now();
  const left = timeLeftSeconds(s, now);
  const tl = $("desktop-timeleft");
  tl.textContent = timeLeftText(s, now);
  tl.className = `timeleft level-${timeLeftLevel(left)}`;
  $("desktop-stop").disabled = !canStop(s);
}

function setDesktopStatus(text, state) {
  $("desktop-status").textContent = text;
  $("desktop-view").dataset.connection = state;
  const connected = state === "connected";
  for (const id of ["desktop-cad", "desktop-disconnect", "clipboard-send"]) $(id).disabled = !connected;
  if (page.shared?.info.scope === "view") {
    // the proxy drops a view-only viewer's input anyway; the page does not offer it
    $("desktop-cad").disabled = true;
    $("clipboard-send").disabled = true;
  }
}

/** The "reconnecting…" indicator over the desktop (empty: not shown). */
function setReconnecting(text) {
  if ($("desktop-reconnecting").textContent !== text) $("desktop-reconnecting").textContent = text;
}

function showOverlay({ message, canReconnect }) {
  setReconnecting("");
  $("overlay-text").textContent = message;
  $("overlay-reconnect").hidden = !canReconnect;
  $("desktop-overlay").hidden = false;
  ($("overlay-reconnect").hidden ? $("overlay-back") : $("overlay-reconnect")).focus();
}

function hideOverlay() {
  $("desktop-overlay").hidden = true;
}

function openDesktop(id) {
  const s = page.sessions.get(id);
  if (!s || !canOpen(s)) return;
  clearError();
  if (page.shared) closeShared();
  page.desktopId = id;
  showView("desktop");
  setSharedMode(false);
  sharePanel.attach(id);
  hideOverlay();
  setReconnecting("");
  renderDesktopInfo();
  $("clipboard-status").textContent = "";
  desktop.open(id);
}

/** Chooses the toolbar of an own desktop (false) or of one seen through a link (true). */
function setSharedMode(shared) {
  $("desktop-view").dataset.shared = shared ? (page.shared?.info.scope ?? "view") : "";
  $("desktop-stop").hidden = shared;
  $("desktop-share-toggle").hidden = shared;
  $("desktop-cad").hidden = shared && page.shared?.info.scope === "view";
  if (shared) sharePanel.attach(null);
}

/** Opens someone else's desktop through a share link (`/?share=<id>`). */
async function openShared(shareId) {
  let info;
  try {
    info = await api.getShare(shareId);
  } catch (exc) {
    if (exc instanceof ApiError && exc.info.signIn) return;
    dropShareFromUrl();
    showError(`This share link does not open a desktop: ${exc instanceof ApiError ? exc.message : exc}`);
    return;
  }
  page.shared = { shareId, info };
  page.desktopId = info.session_id;
  showView("desktop");
  setSharedMode(true);
  hideOverlay();
  setReconnecting("");
  renderDesktopInfo();
  announce(`Opening ${sharedTitle(info)}`);
  desktop.open(info.session_id, () => api.shareTicket(shareId));
}

function closeShared() {
  page.shared = null;
  dropShareFromUrl();
  setSharedMode(false);
}

function dropShareFromUrl() {
  if (window.location.search) history.replaceState(null, "", `${window.location.pathname}${window.location.hash}`);
}

function leaveDesktop(toPortal = true) {
  desktop.close(false);
  hideOverlay();
  setReconnecting("");
  sharePanel.toggle(false);
  if (page.shared) closeShared();
  if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
  const id = page.desktopId;
  page.desktopId = null;
  setDesktopStatus("", "closed");
  if (toPortal !== true) return;
  if (routeParts().length) history.replaceState(null, "", `${window.location.pathname}${window.location.search}#/desktops`);
  showView("portal");
  renderSessions();
  const card = id && document.querySelector(`[data-session-id="${CSS.escape(id)}"] [data-part="open"]`);
  if (card && !card.hidden) card.focus();
  else $("launch-button").focus();
}

async function onDesktopEvent(ev) {
  switch (ev.type) {
    case "connecting":
      setDesktopStatus("Connecting…", "connecting");
      break;
    case "connected":
      hideOverlay();
      setReconnecting("");
      setDesktopStatus("Connected", "connected");
      if (ev.reconnected) $("desktop-view").dataset.reconnects = String(Number($("desktop-view").dataset.reconnects ?? 0) + 1);
      break;
    case "reconnecting":
      // the daemon serving this desktop restarted or the network dropped: the desktop
      // keeps running, a fresh ticket and a new connection follow by themselves
      setDesktopStatus("Reconnecting…", "reconnecting");
      if (ev.code !== null) $("desktop-view").dataset.closeCode = String(ev.code); // for tests and support
      setReconnecting("Connection lost — reconnecting…");
      break;
    case "first-frame": {
      if (ev.reconnected) break;
      const [click] = performance.getEntriesByName("vizdesk:launch-click").slice(-1);
      const [frame] = performance.getEntriesByName("vizdesk:first-frame").slice(-1);
      if (click && frame && frame.startTime > click.startTime) {
        $("desktop-view").dataset.launchToFrameMs = String(Math.round(frame.startTime - click.startTime));
      }
      break;
    }
    case "clipboard":
      $("clipboard-text").value = ev.text;
      $("clipboard-status").textContent = "Received from the desktop";
      break;
    case "desktopname":
      break;
    case "error": {
      const exc = ev.error;
      setReconnecting("");
      setDesktopStatus("Not connected", "disconnected");
      if (exc instanceof ApiError && exc.info.signIn) return;
      if (page.shared) {
        showOverlay({ message: `The shared desktop cannot be opened: ${exc instanceof ApiError ? exc.message : exc}`, canReconnect: false });
        return;
      }
      let session = page.sessions.get(page.desktopId) ?? null;
      if (exc instanceof ApiError && exc.status === 409) session = await freshSession(page.desktopId);
      const msg = disconnectMessage({ session, clean: false, userAsked: false });
      showOverlay({
        ...msg,
        message: exc instanceof ApiError && !(session && isFinal(session.state)) ? exc.message : msg.message,
      });
      break;
    }
    case "disconnected": {
      setReconnecting("");
      setDesktopStatus("Disconnected", "disconnected");
      if (page.view !== "desktop") return;
      if (page.shared) {
        const msg = ev.userAsked
          ? "You disconnected from the shared desktop."
          : ev.gaveUp
            ? "The connection to the shared desktop could not be restored for 2 minutes. Press Reconnect to try again."
            : "Your view of the shared desktop was closed: its owner disconnected you, revoked or let the link expire, or the desktop ended.";
        showOverlay({ message: msg, canReconnect: true });
        return;
      }
      const session = await freshSession(page.desktopId);
      showOverlay(disconnectMessage({ session, ...ev }));
      break;
    }
    default:
      break;
  }
}

async function freshSession(id) {
  if (!id) return null;
  try {
    const s = await api.getSession(id);
    page.sessions = upsertSession(page.sessions, s);
    renderSessions();
    return page.sessions.get(id);
  } catch {
    return page.sessions.get(id) ?? null;
  }
}

function toggleClipboard(force) {
  const panel = $("clipboard-panel");
  const show = force ?? panel.hidden;
  panel.hidden = !show;
  $("desktop-clipboard-toggle").setAttribute("aria-expanded", String(show));
  if (show) $("clipboard-text").focus();
}

function sendClipboard() {
  const ok = desktop.pasteToRemote($("clipboard-text").value);
  $("clipboard-status").textContent = ok ? "Sent to the desktop" : "Not connected";
}

async function copyClipboardLocally() {
  const text = $("clipboard-text").value;
  try {
    await navigator.clipboard.writeText(text);
    $("clipboard-status").textContent = "Copied to this computer";
  } catch {
    $("clipboard-text").select();
    $("clipboard-status").textContent = "Select the text and press Ctrl+C to copy it";
  }
}

function toggleFullscreen() {
  if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
  else $("desktop-view").requestFullscreen?.().catch(() => {});
}

function onGlobalKeydown(ev) {
  // Ctrl+Alt+Shift+M: take keyboard focus back from the remote desktop
  if (page.view === "desktop" && ev.ctrlKey && ev.altKey && ev.shiftKey && ev.code === "KeyM") {
    ev.preventDefault();
    ev.stopPropagation();
    desktop.blur();
    $("desktop-back").focus();
  }
  if (ev.key === "Escape" && !$("clipboard-panel").hidden && ev.target === $("clipboard-text")) {
    toggleClipboard(false);
    desktop.focus();
  }
}

// ------------------------------------------------------------------------------
// Start

function wire() {
  $("signin-form").addEventListener("submit", onSignInSubmit);
  $("sign-out").addEventListener("click", async () => {
    // revoke the token on the server too, so a copy of it stops working at once
    if (page.token) await api.logout().catch(() => {});
    signOut("You signed out.");
  });
  $("error-dismiss").addEventListener("click", clearError);
  $("launch-form").addEventListener("submit", onLaunchSubmit);
  $("launch-image").addEventListener("change", describeImage);
  $("desktop-back").addEventListener("click", () => leaveDesktop());
  $("overlay-back").addEventListener("click", () => leaveDesktop());
  $("renew-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    renewToken($("renew-input").value);
  });
  $("overlay-reconnect").addEventListener("click", () => {
    hideOverlay();
    desktop.reconnect();
  });
  $("desktop-disconnect").addEventListener("click", () => desktop.close(true));
  $("desktop-stop").addEventListener("click", (ev) => onStopClick(page.desktopId, ev.currentTarget));
  $("desktop-clipboard-toggle").addEventListener("click", () => toggleClipboard());
  $("clipboard-send").addEventListener("click", sendClipboard);
  $("clipboard-copy").addEventListener("click", copyClipboardLocally);
  $("desktop-cad").addEventListener("click", () => {
    desktop.sendCtrlAltDel();
    desktop.focus();
  });
  $("desktop-fullscreen").addEventListener("click", toggleFullscreen);
  window.addEventListener("keydown", onGlobalKeydown, true);
  window.addEventListener("hashchange", () => {
    const { token } = tokenFromFragment(window.location.hash);
    if (token) takeFragmentToken();
    else applyRoute();
  });
  desktop = new DesktopConnection({ screen: $("desktop-screen"), api, onEvent: onDesktopEvent });
  sharePanel = new SharePanel({ api, announce });
  $("launch-estimate-button").addEventListener("click", onEstimateClick);
  $("notify-enable").addEventListener("click", async () => {
    await Notification.requestPermission().catch(() => {});
    renderNotifyButton();
  });
}

// ------------------------------------------------------------------------------
// Awareness: warnings (idle, walltime), notifications, thumbnails, extend / relaunch, estimate

function renderNotifyButton() {
  const supported = "Notification" in window;
  $("notify-enable").hidden = !supported || Notification.permission !== "default";
}

/** A browser notification when the user allowed them (the banner shows either way). */
function notify(text, tag) {
  if (!("Notification" in window) || Notification.permission !== "granted") return;
  try {
    new Notification("vizdesk", { body: text, tag });
  } catch {
    // some browsers only allow notifications from a service worker: the banner is enough
  }
}

function onWarning(kind, warning) {
  const s = page.sessions.get(warning.session_id);
  const title = s ? sessionTitle(s) : "Your desktop";
  const banner = warningBanner(kind, warning, title, page.me?.policy);
  page.warnings.set(banner.key, banner);
  renderWarnings();
  announce(banner.text);
  notify(banner.text, banner.key);
}

function onViewerEvent(ev) {
  sharePanel.onViewerEvent(ev);
  const text = viewerEventText(ev);
  announce(text);
  if (ev.event === "join") notify(text, `viewer:${ev.id ?? ev.user}`);
}

function clearWarnings(sessionId, kind = null) {
  let changed = false;
  for (const [key, b] of page.warnings) {
    if (b.sessionId === sessionId && (!kind || b.kind === kind)) changed = page.warnings.delete(key) || changed;
  }
  if (changed) renderWarnings();
}

function renderWarnings() {
  const box = $("warning-banners");
  const existing = new Map([...box.children].map((el) => [el.dataset.key, el]));
  for (const [key, b] of page.warnings) {
    let el = existing.get(key);
    existing.delete(key);
    if (!el) {
      el = $("warning-template").content.firstElementChild.cloneNode(true);
      el.dataset.key = key;
      el.querySelector('[data-part="dismiss"]').addEventListener("click", () => {
        page.warnings.delete(key);
        renderWarnings();
      });
      el.querySelector('[data-part="action"]').addEventListener("click", (ev) => onWarningAction(key, ev.currentTarget));
      box.append(el);
    }
    el.className = `banner warning-banner banner-${b.level}`;
    el.dataset.kind = b.kind;
    el.dataset.sessionId = b.sessionId;
    el.querySelector('[data-part="text"]').textContent = b.text;
    const action = el.querySelector('[data-part="action"]');
    action.hidden = !b.action;
    action.textContent = b.action === "keep" ? "Keep it running" : `Add ${extendStepMinutes(page.me?.policy)} min`;
  }
  for (const el of existing.values()) el.remove();
}

async function onWarningAction(key, button) {
  const b = page.warnings.get(key);
  if (!b) return;
  button.disabled = true;
  try {
    if (b.action === "keep") {
      await api.keepSession(b.sessionId);
      announce("Kept: the idle clock starts again");
    } else if (b.action === "extend") {
      const s = await api.extendSession(b.sessionId, extendStepMinutes(page.me?.policy));
      page.sessions = upsertSession(page.sessions, s);
      renderSessions();
      announce(`Extended: ${timeLeftText(page.sessions.get(s.id), Date.now())}`);
    }
    page.warnings.delete(key);
    renderWarnings();
  } catch (exc) {
    button.disabled = false;
    if (exc instanceof ApiError && exc.info.signIn) return;
    showError(exc instanceof ApiError ? exc.message : String(exc));
  }
}

async function extendDesktop(id, button) {
  button.disabled = true;
  try {
    const s = await api.extendSession(id, extendStepMinutes(page.me?.policy));
    page.sessions = upsertSession(page.sessions, s);
    clearWarnings(id, "walltime");
    renderSessions();
    announce(`${sessionTitle(s)}: ${timeLeftText(page.sessions.get(id), Date.now())}`);
  } catch (exc) {
    if (!(exc instanceof ApiError && exc.info.signIn)) showError(exc instanceof ApiError ? exc.message : String(exc));
  } finally {
    button.disabled = false;
  }
}

async function relaunchDesktop(id, button) {
  button.disabled = true;
  clearError();
  try {
    const s = await api.relaunchSession(id);
    page.sessions = upsertSession(page.sessions, s);
    page.autoOpenId = s.id;
    renderSessions();
    announce(`${sessionTitle(s)} launched with the same settings`);
    maybeAutoOpen(s);
  } catch (exc) {
    if (!(exc instanceof ApiError && exc.info.signIn)) showError(exc instanceof ApiError ? exc.message : String(exc));
  } finally {
    button.disabled = false;
  }
}

async function onEstimateClick() {
  const out = $("launch-estimate");
  const { body, errors } = buildLaunchRequest(launchValues(), page.model);
  if (Object.keys(errors).length) {
    out.textContent = Object.values(errors).join(". ");
    return;
  }
  out.textContent = "Asking Slurm…";
  try {
    out.textContent = estimateText(await api.estimateSession(body));
  } catch (exc) {
    if (exc instanceof ApiError && exc.info.signIn) return;
    out.textContent = exc instanceof ApiError ? exc.message : String(exc);
  }
}

/** Fetches the READY desktops' thumbnails while the list is on screen (no cost otherwise). */
function refreshThumbnails(now) {
  if (page.view !== "portal" || document.visibilityState !== "visible") return;
  for (const li of $("session-list").children) {
    const id = li.dataset.sessionId;
    const s = page.sessions.get(id);
    if (!s || s.state !== "READY") continue;
    const t = page.thumbs.get(id) ?? { at: 0, busy: false };
    if (t.busy || now - t.at < THUMBNAIL_INTERVAL_MS) continue;
    page.thumbs.set(id, { at: now, busy: true });
    api.thumbnail(id).then(
      (blob) => {
        const reader = new FileReader();
        reader.onload = () => {
          const img = li.querySelector('[data-part="thumb"]');
          if (page.sessions.get(id)?.state !== "READY") return;
          img.src = String(reader.result); // a data: URL (the CSP allows no blob: images)
          img.hidden = false;
        };
        reader.readAsDataURL(blob);
        page.thumbs.set(id, { at: Date.now(), busy: false });
      },
      (exc) => {
        // an older daemon without thumbnails (404) is not asked again for this desktop
        const gone = exc instanceof ApiError && [404, 405, 501].includes(exc.status);
        page.thumbs.set(id, { at: gone ? Infinity : Date.now(), busy: false });
      },
    );
  }
}

/** Moves a #token=... handed over by the site's portal into sessionStorage. */
function takeFragmentToken() {
  const { token, rest } = tokenFromFragment(window.location.hash);
  if (!token) return null;
  history.replaceState(null, "", window.location.pathname + window.location.search + rest);
  const normalized = normalizeToken(token);
  if (!normalized) {
    showSignIn("The link did not contain a valid access token. Paste one below.");
    return null;
  }
  if (page.token && page.me && page.token !== normalized) {
    // a renewed token handed over while signed in: taken in place when it is the same user
    const sub = jwtClaims(normalized)?.sub;
    if (!sub || sub === page.me.user) {
      renewToken(normalized).then((ok) => {
        if (!ok) showRenewal(page.tokenExpired);
        else applyRoute();
      });
      return normalized;
    }
    signOut();
  }
  signIn(normalized);
  return normalized;
}

function main() {
  wire();
  if (takeFragmentToken()) return;
  const token = storedToken();
  if (token && normalizeToken(token)) signIn(token);
  else showSignIn(null);
}

main();

// Exposed for debugging from the browser console and for the browser tests.
window.vizdesk = Object.freeze({
  get sessions() {
    return [...page.sessions.values()];
  },
  get remoteSize() {
    return desktop?.remoteSize ?? null;
  },
  get connected() {
    return Boolean(desktop?.connected);
  },
  progressText: (id) => progressText(page.sessions.get(id), Date.now()),
  get uploads() {
    return [...batch.uploads.entries.values()].map((e) => ({ ...e, samples: undefined }));
  },
  get jobs() {
    return [...batch.jobs.values()];
  },
  get tokenExpired() {
    return page.tokenExpired;
  },
  get desktopAttempt() {
    return desktop?.attempt ?? 0;
  },
  get shared() {
    return page.shared ? { ...page.shared.info, scope_text: scopeText(page.shared.info.scope) } : null;
  },
  get warnings() {
    return [...page.warnings.values()];
  },
});
