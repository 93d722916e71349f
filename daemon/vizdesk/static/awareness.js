// vizdesk portal: pure logic of desktop awareness and sharing (no DOM, unit-tested in
// tests/js/awareness.test.mjs): the idle / walltime warning banners, the words for a
// queue estimate, share links (the URL a recipient opens, what a link allows) and the
// owner's list of who is connected.

import { formatDuration } from "./state.js";

/** Minutes the "Extend" button adds (0: the user's policy allows no extension). */
export function extendStepMinutes(policy) {
  const max = Number(policy?.max_extension_minutes ?? 0);
  if (!Number.isFinite(max) || max <= 0) return 0;
  return Math.max(1, Math.min(30, Math.floor(max)));
}

/**
 * The banner for an `idle_warning` / `walltime_warning` event:
 * `{key, sessionId, kind, level, text, action}` where action is "keep" (reset the idle
 * clock), "extend" (add minutes, when policy allows) or null. `title` names the desktop.
 */
export function warningBanner(kind, warning, title, policy = null) {
  const sessionId = String(warning?.session_id ?? "");
  if (kind === "idle") {
    const ends = Number(warning?.ends_in_seconds);
    const idle = Number(warning?.idle_seconds);
    const idleText = Number.isFinite(idle) ? ` for ${formatDuration(idle)}` : "";
    const endText = Number.isFinite(ends) && warning?.ends_in_seconds !== null
      ? ` It will be stopped in ${formatDuration(ends)} unless you keep it.`
      : "";
    return {
      key: `idle:${sessionId}`,
      sessionId,
      kind,
      level: "warning",
      text: `${title} has had no keyboard or mouse input${idleText}.${endText}`,
      action: "keep",
    };
  }
  const left = Number(warning?.remaining_seconds);
  const leftText = Number.isFinite(left) ? formatDuration(left) : "a few minutes";
  const step = extendStepMinutes(policy);
  return {
    key: `walltime:${sessionId}`,
    sessionId,
    kind: "walltime",
    level: Number.isFinite(left) && left < 180 ? "error" : "warning",
    text: `${title} reaches its time limit in ${leftText}. Save your work${step ? ", or extend it" : ""}.`,
    action: step ? "extend" : null,
  };
}

/** The words for a dry-run answer of POST /sessions?dry_run=true. */
export function estimateText(result, locale = undefined) {
  const est = result?.estimate;
  if (est && est.start_time) {
    const when = new Date(est.start_time);
    const soon = when.getTime() - Date.now() < 60000;
    const bits = [soon ? "Slurm expects it to start right away" : `Slurm expects it to start ${when.toLocaleString(locale)}`];
    if (est.nodes) bits.push(`on ${est.nodes}`);
    if (est.partition) bits.push(`(partition ${est.partition})`);
    return `${bits.join(" ")}.`;
  }
  if (result?.estimate_error) return `No start estimate: ${result.estimate_error}.`;
  return "Slurm gave no start estimate.";
}

const SHARE_ID = /^[0-9a-f]{16,64}$/;

/** The share link id in a page URL's query (`?share=<id>`), or null. */
export function shareIdFromSearch(search) {
  const id = new URLSearchParams(String(search ?? "")).get("share");
  return id && SHARE_ID.test(id) ? id : null;
}

/** The absolute URL of a link for the owner to copy (`<origin>/?share=<id>`). */
export function shareUrl(pageLocation, share) {
  const path = share?.link_path ?? `/?share=${encodeURIComponent(share?.id ?? "")}`;
  return new URL(path, pageLocation.origin).href;
}

/** "view only" or "can type and use the mouse". */
export function scopeText(scope) {
  return scope === "control" ? "can type and use the mouse" : "view only";
}

/** One line about a link for the owner: scope, who, until when / why it no longer works. */
export function shareSummary(share, nowMs) {
  const who = [...(share.users ?? []), ...(share.groups ?? []).map((g) => `group ${g}`)];
  const whoText = who.length ? `for ${who.join(", ")}` : "for any signed-in user";
  let state;
  if (share.revoked_at) state = "revoked";
  else {
    const left = (Date.parse(share.expires_at) - nowMs) / 1000;
    state = Number.isFinite(left) && left > 0 ? `expires in ${formatDuration(left)}` : "expired";
  }
  return `${scope(share.scope)} · ${whoText} · ${state}`;
}

function scope(s) {
  return s === "control" ? "Control" : "View only";
}

/** Whether a link still opens the desktop. */
export function shareActive(share, nowMs) {
  return !share.revoked_at && Date.parse(share.expires_at) > nowMs;
}

/** One line about a connected viewer: "bob · view only · connected for 2 min 05 s"
 *  (the owner's own connections, which come through no link: "you (owner)"). */
export function viewerLine(viewer, nowMs) {
  const since = Date.parse(viewer?.since ?? "");
  const dur = Number.isFinite(since) ? ` · connected for ${formatDuration((nowMs - since) / 1000)}` : "";
  if (!viewer?.share_id) return `${viewer?.user ?? "?"} (you, the owner)${dur}`;
  return `${viewer?.user ?? "?"} · ${scopeText(viewer?.scope)}${dur}`;
}

/** Whether the owner may kick this connection (only those that came through a link). */
export function canKick(viewer) {
  return Boolean(viewer?.share_id && viewer?.id);
}

/** Text for the owner's notification when someone joins or leaves. */
export function viewerEventText(ev) {
  const who = ev?.user ?? "someone";
  if (ev?.event === "join") return `${who} is now watching your desktop (${scopeText(ev.scope)})`;
  const why = ev?.reason ? ` (${ev.reason})` : "";
  return `${who} left your desktop${why}`;
}

/** What the recipient's page says about the link it opened. */
export function sharedTitle(info) {
  return `${info?.owner ?? "Someone"}'s desktop — ${scopeText(info?.scope)}`;
}
