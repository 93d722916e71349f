// vizdesk portal: the desktop view, a thin wrapper around noVNC's RFB object.
// Each (re)connect asks the API for a fresh one-time ticket; the proxy does the VNC
// authentication, so noVNC sees security type None and never prompts for a password.

import RFB from "./vendor/novnc/core/rfb.js";
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

export class DesktopConnection {
  /**
   * @param {object} opts
   * @param {HTMLElement} opts.screen element noVNC draws into
   * @param {import("./api.js").Api} opts.api
   * @param {(ev) => void} opts.onEvent receives {type: "connecting"|"connected"|"first-frame"|
   *   "disconnected"|"clipboard"|"desktopname"|"error", ...}
   */
  constructor({ screen, api, onEvent }) {
    this.screen = screen;
    this.api = api;
    this.onEvent = onEvent;
    this.rfb = null;
    this.sessionId = null;
    this.userAsked = false;
    this.securityFailure = null;
    this.attempt = 0;
    this.isConnected = false;
    this.ticketSource = null;
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
    this.userAsked = false;
    this.securityFailure = null;
    const attempt = ++this.attempt;
    this.onEvent({ type: "connecting" });
    performance.mark("vizdesk:ticket-request");
    let ticket;
    try {
      ticket = await (ticketSource ? ticketSource() : this.api.connectTicket(sessionId));
    } catch (exc) {
      if (attempt !== this.attempt) return;
      this.onEvent({ type: "error", error: exc });
      return;
    }
    if (attempt !== this.attempt) return; // superseded (closed or reopened meanwhile)
    const url = websocketUrl(window.location, ticket.ws_path);
    performance.mark("vizdesk:ws-open");
    let rfb;
    try {
      rfb = new RFB(this.screen, url, { shared: true });
    } catch (exc) {
      this.onEvent({ type: "error", error: exc });
      return;
    }
    this.rfb = rfb;
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
      if (this.rfb !== rfb) return;
      this.isConnected = true;
      performance.mark("vizdesk:rfb-connect");
      this.onEvent({ type: "connected" });
      this.watchFirstFrame(rfb);
      rfb.focus();
    });
    rfb.addEventListener("disconnect", (e) => {
      if (this.rfb !== rfb) return;
      this.rfb = null;
      this.isConnected = false;
      this.onEvent({
        type: "disconnected",
        clean: Boolean(e.detail?.clean),
        userAsked: this.userAsked,
        securityFailure: this.securityFailure,
      });
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

  /** Reports the first drawn frame (noVNC's canvas starts fully transparent). */
  watchFirstFrame(rfb) {
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
          performance.mark("vizdesk:first-frame");
          this.onEvent({ type: "first-frame" });
          return;
        }
      }
      if (performance.now() - started < 30000) requestAnimationFrame(check);
    };
    requestAnimationFrame(check);
  }

  /** Closes the connection (userAsked: the user pressed "Disconnect"). */
  close(userAsked = true) {
    this.attempt++;
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
