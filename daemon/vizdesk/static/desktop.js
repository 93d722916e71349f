// vizdesk portal: the desktop view, a thin wrapper around noVNC's RFB object.
// Each (re)connect asks the API for a fresh one-time ticket; the proxy does the VNC
// authentication, so noVNC sees security type None and never prompts for a password.
// A connection that drops for a reason worth retrying (the daemon serving it restarted or
// died, the network failed: reconnect.js classifyClose) is reopened by itself with a
// fresh ticket and a new RFB on the same screen element, with a backoff and a bounded
// give-up; the page shows "reconnecting…" meanwhile and nothing else changes.

import RFB from "./vendor/novnc/core/rfb.js";
import { Backoff, classifyClose, retryableStatus } from "./reconnect.js";
import { websocketUrl } from "./state.js";

/**
 * Places `screen` at whole device-independent pixels inside its container and gives it a
 * whole-pixel size. noVNC compares the screen's getBoundingClientRect() size with the
 * remote desktop's: a fractional one (the toolbar and banners are sized in rem) made it
 * ask the server for a new size every 100 ms forever, and a canvas at a fractional offset
 * is resampled (a blurred desktop, clicks one pixel off).
 */
export function snapToPixels(screen) {
  const box = screen.parentElement?.getBoundingClientRect();
  if (!box || !box.width || !box.height) return;
  const dx = Math.ceil(box.left) - box.left;
  const dy = Math.ceil(box.top) - box.top;
  // insets, not a size: until the next observation the screen still follows its container
  const right = box.width - dx - Math.floor(box.width - dx);
  const bottom = box.height - dy - Math.floor(box.height - dy);
  screen.style.inset = `${dy}px ${right}px ${bottom}px ${dx}px`;
}

/** How long one automatic reconnect attempt may take to reach the desktop. */
const ATTEMPT_TIMEOUT_MS = 20000;

export class DesktopConnection {
  /**
   * @param {object} opts
   * @param {HTMLElement} opts.screen element noVNC draws into
   * @param {import("./api.js").Api} opts.api
   * @param {(ev) => void} opts.onEvent receives {type: "connecting"|"connected"|"first-frame"|
   *   "reconnecting"|"disconnected"|"clipboard"|"desktopname"|"error", ...}; "connected"
   *   and "first-frame" carry `reconnected: true` after an automatic reconnect,
   *   "reconnecting" {attempt, delayMs, code}, "disconnected" `gaveUp: true` when the
   *   automatic reconnect gave up (reconnect.js GIVE_UP_MS)
   * @param {() => number} [opts.now] clock (ms), for tests
   */
  constructor({ screen, api, onEvent, now = () => Date.now() }) {
    this.screen = screen;
    this.api = api;
    this.onEvent = onEvent;
    this.now = now;
    this.rfb = null;
    this.sessionId = null;
    this.userAsked = false;
    this.securityFailure = null;
    this.attempt = 0;
    this.isConnected = false;
    this.ticketSource = null;
    this.backoff = new Backoff();
    this.everConnected = false; // this open() had a connection (only then: reconnect by itself)
    this.reconnecting = false; // an automatic reconnect is under way
    this.retryTimer = null;
    this.frozen = null; // the last picture, kept while reconnecting (freezeFrame)
    // Keep the screen on whole pixels of its container (see snapToPixels).
    if (screen.parentElement && typeof ResizeObserver !== "undefined") {
      this.snap = new ResizeObserver(() => snapToPixels(screen));
      this.snap.observe(screen.parentElement);
    }
  }

  get connected() {
    return this.rfb !== null && this.isConnected;
  }

  /** Framebuffer size of the remote desktop (0×0 before the first ServerInit). */
  get remoteSize() {
    const canvas = this.screen.querySelector("canvas");
    return canvas ? { width: canvas.width, height: canvas.height } : { width: 0, height: 0 };
  }

  /**
   * Connects to a desktop. `ticketSource` (optional) fetches the one-time ticket another
   * way than the owner's /connect, e.g. a share link's own ticket; reconnects reuse it.
   */
  async open(sessionId, ticketSource = null) {
    this.close(false);
    this.sessionId = sessionId;
    this.ticketSource = ticketSource;
    this.backoff.reset();
    this.everConnected = false;
    this.reconnecting = false;
    this.onEvent({ type: "connecting" });
    return this.connectOnce();
  }

  /** One attempt: a fresh one-time ticket, then a new RFB on the same screen element. */
  async connectOnce() {
    this.userAsked = false;
    this.securityFailure = null;
    const attempt = ++this.attempt;
    const ticketSource = this.ticketSource;
    performance.mark("vizdesk:ticket-request");
    let ticket;
    try {
      ticket = await (ticketSource ? ticketSource() : this.api.connectTicket(this.sessionId));
    } catch (exc) {
      if (attempt !== this.attempt) return;
      // a daemon restarting (no answer, 502/503) is bridged; 401/403/404/409 are final
      if (this.reconnecting && !exc?.info?.signIn && retryableStatus(exc?.status ?? 0)) {
        this.retryLater(null);
        return;
      }
      this.unfreeze();
      this.reconnecting = false;
      this.onEvent({ type: "error", error: exc });
      return;
    }
    if (attempt !== this.attempt) return; // superseded (closed or reopened meanwhile)
    const url = websocketUrl(window.location, ticket.ws_path);
    performance.mark("vizdesk:ws-open");
    // The page opens the websocket itself (noVNC accepts one) to see its close code: the
    // disconnect event noVNC sends has only a "clean" flag. This listener is added before
    // noVNC's own handler, so the code is known when noVNC reports the disconnect.
    let closeInfo = null;
    let timedOut = false;
    let ws = null;
    let rfb;
    try {
      ws = new WebSocket(url);
      ws.addEventListener("close", (e) => {
        closeInfo = { code: e.code, reason: e.reason };
        // noVNC removes its canvas right after this: keep the last picture meanwhile
        if (this.rfb === rfb && this.isConnected) this.freezeFrame();
      });
      rfb = new RFB(this.screen, ws, { shared: true });
    } catch (exc) {
      ws?.close();
      this.reconnecting = false;
      this.onEvent({ type: "error", error: exc });
      return;
    }
    this.rfb = rfb;
    // an automatic attempt that hangs (a replica that accepts but never answers) counts as
    // failed after ATTEMPT_TIMEOUT_MS, so the schedule and the give-up go on
    const hang = this.reconnecting
      ? setTimeout(() => {
          if (this.rfb !== rfb || this.isConnected) return;
          timedOut = true;
          rfb.disconnect();
        }, ATTEMPT_TIMEOUT_MS)
      : null;
    // the owner's desktop follows the browser window; someone else's (a share link) is
    // scaled into it instead: a viewer never resizes the owner's desktop
    rfb.resizeSession = !ticketSource;
    rfb.scaleViewport = Boolean(ticketSource);
    rfb.clipViewport = false;
    rfb.focusOnClick = true;
    rfb.background = "#1b1e23";
    rfb.qualityLevel = 6;
    rfb.compressionLevel = 2;

    rfb.addEventListener("connect", () => {
      clearTimeout(hang);
      if (this.rfb !== rfb) return;
      const reconnected = this.reconnecting;
      this.isConnected = true;
      this.everConnected = true;
      this.reconnecting = false;
      this.backoff.connected(this.now());
      performance.mark(reconnected ? "vizdesk:rfb-reconnect" : "vizdesk:rfb-connect");
      this.onEvent({ type: "connected", reconnected });
      this.watchFirstFrame(rfb, reconnected);
      // after a reconnect the keyboard focus stays where the user left it; it returns to
      // the desktop only if it was there (the old canvas is gone: the focus is on <body>)
      const active = document.activeElement;
      if (!reconnected || !active || active === document.body || this.screen.contains(active)) rfb.focus();
    });
    rfb.addEventListener("disconnect", (e) => {
      clearTimeout(hang);
      if (this.rfb !== rfb) return;
      this.rfb = null;
      this.isConnected = false;
      const detail = {
        clean: Boolean(e.detail?.clean),
        userAsked: this.userAsked,
        securityFailure: this.securityFailure,
        code: closeInfo?.code ?? null,
        reason: closeInfo?.reason ?? "",
      };
      const retry = timedOut || classifyClose(detail) === "reconnect";
      if ((this.everConnected || this.reconnecting) && retry) {
        this.retryLater(detail.code);
        return;
      }
      this.unfreeze();
      this.reconnecting = false;
      this.onEvent({ type: "disconnected", ...detail });
    });
    rfb.addEventListener("securityfailure", (e) => {
      this.securityFailure = e.detail?.reason || `security failure ${e.detail?.status ?? ""}`.trim();
    });
    rfb.addEventListener("credentialsrequired", () => {
      // The proxy performs VNC authentication; a password prompt means a misconfigured
      // proxy, and the password must never be asked of (or sent by) the browser.
      this.securityFailure = "the desktop asked the browser for a password, which vizdesk never does";
      rfb.disconnect();
    });
    rfb.addEventListener("clipboard", (e) => {
      if (this.rfb === rfb) this.onEvent({ type: "clipboard", text: String(e.detail?.text ?? "") });
    });
    rfb.addEventListener("desktopname", (e) => {
      if (this.rfb === rfb) this.onEvent({ type: "desktopname", name: String(e.detail?.name ?? "") });
    });
  }

  /**
   * Keeps a copy of the desktop's last picture (dimmed by the stylesheet) where noVNC's
   * canvas was, until the next connection draws its first frame: a reconnect does not
   * blank the view. The copy is outside the screen element and hidden from assistive
   * technology; the "reconnecting…" status says what happens.
   */
  freezeFrame() {
    this.unfreeze();
    const canvas = this.screen.querySelector("canvas");
    const host = this.screen.parentElement;
    if (!canvas || !canvas.width || !canvas.height || !host) return;
    const box = canvas.getBoundingClientRect();
    const hostBox = host.getBoundingClientRect();
    const copy = document.createElement("canvas");
    copy.width = canvas.width;
    copy.height = canvas.height;
    try {
      copy.getContext("2d").drawImage(canvas, 0, 0);
    } catch {
      return;
    }
    copy.className = "desktop-frozen";
    copy.setAttribute("aria-hidden", "true");
    copy.style.left = `${box.left - hostBox.left}px`;
    copy.style.top = `${box.top - hostBox.top}px`;
    copy.style.width = `${box.width}px`;
    copy.style.height = `${box.height}px`;
    this.screen.after(copy);
    this.frozen = copy;
  }

  unfreeze() {
    this.frozen?.remove();
    this.frozen = null;
  }

  /** Schedules the next automatic attempt, or gives up (reconnect.js Backoff). */
  retryLater(code) {
    const step = this.backoff.next(this.now());
    if (step.giveUp) {
      this.unfreeze();
      this.reconnecting = false;
      this.onEvent({
        type: "disconnected",
        clean: false,
        userAsked: false,
        securityFailure: null,
        code,
        reason: "",
        gaveUp: true,
        downForMs: step.downForMs,
      });
      return;
    }
    this.reconnecting = true;
    this.onEvent({ type: "reconnecting", attempt: step.attempt, delayMs: step.delayMs, code });
    const attempt = ++this.attempt; // a close() or open() meanwhile cancels it
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      if (attempt === this.attempt) this.connectOnce();
    }, step.delayMs);
  }

  /** Reports the first drawn frame (noVNC's canvas starts fully transparent). */
  watchFirstFrame(rfb, reconnected = false) {
    const started = performance.now();
    const check = () => {
      if (this.rfb !== rfb) return;
      const canvas = this.screen.querySelector("canvas");
      if (canvas && canvas.width > 0 && canvas.height > 0) {
        const ctx = canvas.getContext("2d", { willReadFrequently: true });
        const points = [
          [canvas.width >> 1, canvas.height >> 1],
          [1, 1],
          [canvas.width - 2, canvas.height - 2],
        ];
        if (points.some(([x, y]) => ctx.getImageData(x, y, 1, 1).data[3] !== 0)) {
          if (!reconnected) performance.mark("vizdesk:first-frame");
          this.unfreeze(); // the new connection's picture replaces the kept one
          this.onEvent({ type: "first-frame", reconnected });
          return;
        }
      }
      if (performance.now() - started < 30000) requestAnimationFrame(check);
      else this.unfreeze();
    };
    requestAnimationFrame(check);
  }

  /** Closes the connection (userAsked: the user pressed "Disconnect"). */
  close(userAsked = true) {
    this.attempt++;
    this.unfreeze();
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    const wasReconnecting = this.reconnecting;
    this.reconnecting = false;
    if (wasReconnecting && !this.rfb && userAsked) {
      // Disconnect pressed between two automatic attempts: it stops them
      this.onEvent({ type: "disconnected", clean: true, userAsked: true, securityFailure: null, code: null, reason: "" });
      return;
    }
    if (this.rfb) {
      this.userAsked = userAsked;
      const rfb = this.rfb;
      if (!userAsked) this.rfb = null; // silent close: no "disconnected" message
      rfb.disconnect();
    }
  }

  reconnect() {
    if (this.sessionId) return this.open(this.sessionId, this.ticketSource);
    return Promise.resolve();
  }

  pasteToRemote(text) {
    if (!this.rfb) return false;
    this.rfb.clipboardPasteFrom(text);
    return true;
  }

  sendCtrlAltDel() {
    this.rfb?.sendCtrlAltDel();
  }

  focus() {
    this.rfb?.focus({ preventScroll: true });
  }

  blur() {
    this.rfb?.blur();
  }
}
