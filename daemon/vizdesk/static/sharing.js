// vizdesk portal: the owner's share panel of an open desktop (DOM glue). Create a
// `view` or `control` link with an expiry (and optionally named users), copy it, revoke
// it; see who is connected and kick one viewer. The proxy enforces what a link allows;
// this panel only asks the API. Pure logic lives in awareness.js.

import { ApiError } from "./api.js";
import { canKick, shareActive, shareSummary, shareUrl, viewerLine } from "./awareness.js";

const $ = (id) => document.getElementById(id);

export class SharePanel {
  /**
   * @param {object} opts
   * @param {import("./api.js").Api} opts.api
   * @param {(text: string) => void} opts.announce screen-reader live region
   */
  constructor({ api, announce }) {
    this.api = api;
    this.announce = announce;
    this.sessionId = null;
    this.shares = [];
    this.viewers = [];
    this.timer = null;
    $("share-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.create();
    });
    $("desktop-share-toggle").addEventListener("click", () => this.toggle());
    $("share-close").addEventListener("click", () => this.toggle(false));
  }

  get open() {
    return !$("share-panel").hidden;
  }

  /** The desktop the panel belongs to (null: none, e.g. a recipient's view). */
  attach(sessionId) {
    if (this.sessionId !== sessionId) {
      this.shares = [];
      this.viewers = [];
      this.render();
    }
    this.sessionId = sessionId;
    if (!sessionId) this.toggle(false);
  }

  toggle(force) {
    const panel = $("share-panel");
    const show = force ?? panel.hidden;
    panel.hidden = !show;
    $("desktop-share-toggle").setAttribute("aria-expanded", String(show));
    clearInterval(this.timer);
    this.timer = null;
    if (show) {
      this.refresh();
      // the durations shown ("connected for …", "expires in …") move on
      this.timer = setInterval(() => this.render(), 5000);
      $("share-scope").focus();
    }
  }

  async refresh() {
    const sid = this.sessionId;
    if (!sid) return;
    try {
      const [shares, viewers] = await Promise.all([this.api.listShares(sid), this.api.listViewers(sid)]);
      if (sid !== this.sessionId) return;
      this.shares = shares;
      this.viewers = viewers;
      this.render();
    } catch (exc) {
      if (exc instanceof ApiError && exc.info.signIn) return;
      $("share-status").textContent = exc instanceof ApiError ? exc.message : String(exc);
    }
  }

  /** A `viewer` event of the events stream (join / leave) for this desktop. */
  onViewerEvent(ev) {
    if (ev.session_id === this.sessionId) this.refresh();
  }

  async create() {
    const err = $("share-error");
    err.hidden = true;
    for (const id of ["share-expiry", "share-users"]) $(id).removeAttribute("aria-invalid");
    const minutes = Number($("share-expiry").value);
    const users = $("share-users")
      .value.split(/[\s,]+/)
      .filter(Boolean);
    const body = { scope: $("share-scope").value, expires_in_minutes: minutes };
    if (users.length) body.users = users;
    try {
      const share = await this.api.createShare(this.sessionId, body);
      this.shares = [...this.shares, share];
      this.render();
      this.announce(`Link created (${share.scope === "control" ? "control" : "view only"})`);
      document.querySelector(`[data-share-id="${CSS.escape(share.id)}"] input`)?.focus();
    } catch (exc) {
      if (exc instanceof ApiError && exc.info.signIn) return;
      err.textContent = exc instanceof ApiError ? exc.message : String(exc);
      err.hidden = false;
      const field = { expires_in_minutes: "share-expiry", users: "share-users", scope: "share-scope" }[exc?.info?.field];
      if (field) $(field).setAttribute("aria-invalid", "true");
    }
  }

  async copy(share, input, status) {
    const url = shareUrl(window.location, share);
    try {
      await navigator.clipboard.writeText(url);
      status.textContent = "Copied";
    } catch {
      input.select();
      status.textContent = "Selected: press Ctrl+C to copy";
    }
  }

  async revoke(share) {
    try {
      const updated = await this.api.revokeShare(this.sessionId, share.id);
      this.shares = this.shares.map((s) => (s.id === share.id ? { ...s, ...updated } : s));
      this.announce("Link revoked: everyone who used it was disconnected");
      await this.refresh();
    } catch (exc) {
      if (exc instanceof ApiError && exc.info.signIn) return;
      $("share-status").textContent = exc instanceof ApiError ? exc.message : String(exc);
    }
  }

  async kick(viewer) {
    try {
      await this.api.kickViewer(this.sessionId, viewer.id);
      this.viewers = this.viewers.filter((v) => v.id !== viewer.id);
      this.render();
      this.announce(`${viewer.user} was disconnected`);
      $("share-scope").focus();
    } catch (exc) {
      if (exc instanceof ApiError && exc.info.signIn) return;
      $("share-status").textContent = exc instanceof ApiError ? exc.message : String(exc);
    }
  }

  render() {
    const now = Date.now();
    const links = $("share-links");
    links.replaceChildren(
      ...this.shares.map((share) => {
        const li = document.createElement("li");
        li.dataset.shareId = share.id;
        li.className = shareActive(share, now) ? "share-link" : "share-link inactive";
        const label = document.createElement("label");
        const inputId = `share-url-${share.id}`;
        label.htmlFor = inputId;
        label.textContent = shareSummary(share, now);
        const input = document.createElement("input");
        input.id = inputId;
        input.type = "text";
        input.readOnly = true;
        input.value = shareUrl(window.location, share);
        const actions = document.createElement("div");
        actions.className = "actions";
        const status = document.createElement("span");
        status.className = "muted small";
        status.setAttribute("role", "status");
        if (shareActive(share, now)) {
          const copy = document.createElement("button");
          copy.type = "button";
          copy.className = "small";
          copy.textContent = "Copy link";
          copy.dataset.action = "copy";
          copy.addEventListener("click", () => this.copy(share, input, status));
          const revoke = document.createElement("button");
          revoke.type = "button";
          revoke.className = "danger small";
          revoke.textContent = "Revoke";
          revoke.dataset.action = "revoke";
          revoke.setAttribute("aria-label", `Revoke link: ${label.textContent}`);
          revoke.addEventListener("click", () => this.revoke(share));
          actions.append(copy, revoke);
        }
        actions.append(status);
        li.append(label, input, actions);
        return li;
      }),
    );
    $("share-links-empty").hidden = this.shares.length > 0;
    const viewers = $("share-viewers");
    viewers.replaceChildren(
      ...this.viewers.map((v) => {
        const li = document.createElement("li");
        li.dataset.viewerId = v.id ?? "";
        li.dataset.user = v.user ?? "";
        const text = document.createElement("span");
        text.textContent = viewerLine(v, now);
        li.append(text);
        if (canKick(v)) {
          const kick = document.createElement("button");
          kick.type = "button";
          kick.className = "danger small";
          kick.textContent = "Disconnect";
          kick.dataset.action = "kick";
          kick.setAttribute("aria-label", `Disconnect ${v.user}`);
          kick.addEventListener("click", () => this.kick(v));
          li.append(kick);
        }
        return li;
      }),
    );
    $("share-viewers-empty").hidden = this.viewers.length > 0;
  }
}
