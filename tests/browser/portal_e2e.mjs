// Real-browser end-to-end test of the vizdesk portal page, driven by playwright-core
// with Debian's /usr/bin/chromium (never a downloaded browser).
//
// Env:  VIZDESK_URL         base URL of a running daemon (e.g. http://127.0.0.1:8080)
//       VIZDESK_TOKEN       a JWT for a user allowed to launch a desktop
//       VIZDESK_OUTPUT      screenshot / timings folder (default test-output/browser)
//       VIZDESK_CHROMIUM    browser binary (default /usr/bin/chromium)
//       VIZDESK_LAUNCH_BODY optional JSON of launch form values, e.g. {"partition":"viz"}
//       VIZDESK_TIMEOUT_S   how long a desktop may take to become ready (default 120)
//       VIZDESK_STANDIN=1   the target is tests/browser/standin_server.py (dev aid): also
//                           checks the clipboard both ways and the scheduler banner through
//                           its dev endpoints
// Steps: open the page with #token=, launch a desktop, see the start-up steps, wait for the
// noVNC canvas and its first frame, screenshot it and check it is not uniform, resize the
// window and check the remote framebuffer follows, disconnect + reconnect (fresh ticket),
// stop the desktop and see it end, expired token → sign-in again. Prints a JSON summary
// with timings (click → first frame) and exits non-zero on the first failure.

import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";

import { decodePng, imageStats, looksLikeContent } from "./png.mjs";

const BASE = (process.env.VIZDESK_URL ?? "").replace(/\/+$/, "");
const TOKEN = process.env.VIZDESK_TOKEN ?? "";
const OUT = resolve(process.env.VIZDESK_OUTPUT ?? "test-output/browser");
const CHROMIUM = process.env.VIZDESK_CHROMIUM ?? "/usr/bin/chromium";
const STANDIN = process.env.VIZDESK_STANDIN === "1";
const TIMEOUT_MS = Number(process.env.VIZDESK_TIMEOUT_S ?? 120) * 1000;
const LAUNCH_BODY = process.env.VIZDESK_LAUNCH_BODY ? JSON.parse(process.env.VIZDESK_LAUNCH_BODY) : {};

if (!BASE || !TOKEN) {
  console.error("VIZDESK_URL and VIZDESK_TOKEN are required");
  process.exit(2);
}

const summary = { target: BASE, standin: STANDIN, steps: [], timings_ms: {}, screenshots: [], problems: [] };
const t = () => performance.now();
const log = (msg) => {
  summary.steps.push(msg);
  console.log(`[portal-e2e] ${msg}`);
};

class Failure extends Error {}
function check(cond, msg) {
  if (!cond) throw new Failure(msg);
}
/** Awaits a Playwright wait; a timeout becomes a Failure that says what did not happen. */
async function expectSoon(promise, what) {
  try {
    return await promise;
  } catch (exc) {
    throw new Failure(`${what} (${String(exc?.message ?? exc).split("\n")[0]})`);
  }
}

mkdirSync(OUT, { recursive: true });
const profile = mkdtempSync(join(tmpdir(), "vizdesk-chromium-"));
const origin = new URL(BASE).origin;

const context = await chromium.launchPersistentContext(profile, {
  executablePath: CHROMIUM,
  headless: true,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
  viewport: { width: 1280, height: 800 },
  permissions: ["clipboard-read", "clipboard-write"],
});

let page;
let sessionId = null;
try {
  page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(30000);

  // Everything must come from the daemon itself: record any other request.
  const foreign = [];
  page.on("request", (req) => {
    const url = req.url();
    if (url.startsWith("data:") || url.startsWith("blob:")) return;
    const u = new URL(url);
    const sameHost = u.host === new URL(origin).host;
    if (!sameHost) foreign.push(url);
  });
  const consoleErrors = [];
  page.on("console", (msg) => {
    if (msg.type() === "error") consoleErrors.push(msg.text());
  });
  page.on("pageerror", (err) => consoleErrors.push(`pageerror: ${err.message}`));
  // CSP violations and card state changes are recorded inside the page
  const cspViolations = [];
  await page.exposeFunction("__vizdeskCspViolation", (v) => cspViolations.push(v));
  let cspHeader = null;
  page.on("response", (resp) => {
    if (resp.request().resourceType() === "document") cspHeader = resp.headers()["content-security-policy"] ?? null;
  });
  await page.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (e) =>
      window.__vizdeskCspViolation(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`),
    );
    window.__stateLog = [];
    const seen = new Map();
    const obs = new MutationObserver(() => {
      for (const li of document.querySelectorAll("[data-session-id]")) {
        const key = li.dataset.sessionId;
        const st = li.dataset.state;
        if (st && seen.get(key) !== st) {
          seen.set(key, st);
          const active = li.querySelector(".step-active, .step-failed");
          window.__stateLog.push({ id: key, state: st, at: performance.now(), step: active?.textContent ?? "" });
        }
      }
    });
    document.addEventListener("DOMContentLoaded", () =>
      obs.observe(document.body, { subtree: true, childList: true, attributes: true, attributeFilter: ["data-state"] }),
    );
  });

  async function shot(name, locator = null) {
    const path = join(OUT, `${name}.png`);
    if (locator) await locator.screenshot({ path });
    else await page.screenshot({ path });
    summary.screenshots.push(path);
    return path;
  }

  // --- 1. sign in through the URL fragment ----------------------------------------
  await page.goto(`${BASE}/#token=${encodeURIComponent(TOKEN)}`);
  await page.locator("#portal-view").waitFor({ state: "visible" });
  const hash = await page.evaluate(() => window.location.hash);
  check(!hash.includes("token"), `token left in the URL fragment: ${hash}`);
  const stored = await page.evaluate(() => sessionStorage.getItem("vizdesk.token"));
  check(stored === TOKEN, "token not kept in sessionStorage");
  const cookies = await context.cookies();
  check(!cookies.some((c) => c.value.includes(TOKEN.slice(0, 20))), "token found in a cookie");
  await page.locator("#events-state[data-mode='live'], #events-state[data-mode='polling']").waitFor();
  log(`signed in via #token= (events: ${await page.locator("#events-state").getAttribute("data-mode")})`);
  await shot("01-portal");

  // --- 2. launch a desktop ------------------------------------------------------------
  for (const [name, value] of Object.entries(LAUNCH_BODY)) {
    const sel = { partition: "#launch-partition", cpus: "#launch-cpus", memory_gb: "#launch-memory",
      gpus: "#launch-gpus", time_limit_minutes: "#launch-time", image: "#launch-image" }[name];
    if (!sel) continue;
    if (name === "partition" && (await page.locator("#launch-partition-select").isVisible())) {
      await page.selectOption("#launch-partition-select", String(value));
    } else if (name === "image") {
      await page.selectOption(sel, String(value));
    } else {
      await page.fill(sel, String(value));
    }
  }
  if (STANDIN) {
    // a refusal by the server's policy is shown with the limit it names
    const chosen = await page.inputValue("#launch-image");
    await page.selectOption("#launch-image", "python");
    await page.click("#launch-button");
    await page.locator("#launch-errors").waitFor({ state: "visible" });
    const refusal = await page.locator("#launch-errors").innerText();
    check(/policy/i.test(refusal) && /not a desktop image/.test(refusal), `policy refusal shown as: ${refusal}`);
    await shot("02-policy-refusal", page.locator(".launch"));
    log(`policy refusal shown: ${refusal}`);
    await page.selectOption("#launch-image", chosen);
  }
  const before = new Set(await page.evaluate(() => window.vizdesk.sessions.map((s) => s.id)));
  const clickAt = t();
  await page.click("#launch-button");
  // the new session appears, or the launch is refused (then fail at once with the message)
  await expectSoon(
    page.waitForFunction(
      (known) =>
        window.vizdesk.sessions.some((s) => !known.includes(s.id)) ||
        !document.querySelector("#launch-errors").hidden,
      [...before],
      { timeout: 15000 },
    ),
    "no session appeared after clicking Launch",
  );
  if (await page.locator("#launch-errors").isVisible()) {
    throw new Failure(`launch refused: ${await page.locator("#launch-errors").innerText()}`);
  }
  sessionId = await page.evaluate((known) => window.vizdesk.sessions.find((s) => !known.includes(s.id)).id, [
    ...before,
  ]);
  summary.session_id = sessionId;
  summary.timings_ms.click_to_created = Math.round(t() - clickAt);
  log(`launched session ${sessionId}`);
  // the start-up steps are on screen while it starts (unless it was ready at once)
  const myCard = page.locator(`[data-session-id="${sessionId}"]`);
  const startingState = await myCard.getAttribute("data-state").catch(() => null);
  if (startingState === "PENDING" || startingState === "STARTING") {
    const stepsText = await myCard.locator("[data-part=steps]").innerText();
    check(/Queued in Slurm/.test(stepsText), `steps not shown: ${stepsText}`);
    await shot("02-starting");
    log(`start-up steps shown: ${stepsText.replace(/\s+/g, " ").trim()}`);
  }

  // --- 3. the desktop opens by itself when READY: canvas, first frame ---------------
  await expectSoon(
    page.waitForFunction(
      (id) =>
        !document.querySelector("#desktop-view").hidden ||
        ["FAILED", "ENDED"].includes(window.vizdesk.sessions.find((s) => s.id === id)?.state),
      sessionId,
      { timeout: TIMEOUT_MS, polling: 100 },
    ),
    "the desktop view did not open (session not READY in time?)",
  );
  const launched = await page.evaluate((id) => window.vizdesk.sessions.find((s) => s.id === id), sessionId);
  if (launched.state === "FAILED" || launched.state === "ENDED") {
    throw new Failure(`the desktop did not start: ${launched.state} (${launched.reason})`);
  }
  summary.timings_ms.click_to_desktop_view = Math.round(t() - clickAt);
  const canvas = page.locator("#desktop-screen canvas");
  await canvas.waitFor({ state: "attached", timeout: 30000 });
  // non-uniform content drawn on the canvas (remote frames are real content)
  const sampleCanvas = () =>
    page.evaluate(() => {
      const c = document.querySelector("#desktop-screen canvas");
      if (!c || !c.width || !c.height) return null;
      const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
      const colors = new Set();
      let opaque = 0;
      let n = 0;
      for (let i = 0; i < d.length; i += 4 * 37) {
        n++;
        if (d[i + 3] === 255) opaque++;
        colors.add((d[i] >> 4) * 256 + (d[i + 1] >> 4) * 16 + (d[i + 2] >> 4));
      }
      return { width: c.width, height: c.height, colors: colors.size, opaqueShare: opaque / n };
    });
  await expectSoon(page.waitForFunction(
    () => {
      const c = document.querySelector("#desktop-screen canvas");
      if (!c || !c.width) return false;
      const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
      let first = -1;
      for (let i = 0; i < d.length; i += 4 * 29) {
        if (d[i + 3] !== 255) continue;
        const v = (d[i] << 16) | (d[i + 1] << 8) | d[i + 2];
        if (first === -1) first = v;
        else if (v !== first) return true;
      }
      return false;
    },
    null,
    { timeout: 60000, polling: 50 },
  ), "no non-uniform frame appeared on the noVNC canvas");
  summary.timings_ms.click_to_first_frame = Math.round(t() - clickAt);
  const pageTimings = await page.evaluate(() => {
    const m = (n) => performance.getEntriesByName(n).slice(-1)[0]?.startTime ?? null;
    const click = m("vizdesk:launch-click");
    const rel = (n) => (m(n) !== null && click !== null ? Math.round(m(n) - click) : null);
    return {
      ready: rel("vizdesk:session-ready"),
      rfb_connect: rel("vizdesk:rfb-connect"),
      first_frame: rel("vizdesk:first-frame"),
      states: window.__stateLog.map((e) => ({ ...e, at: Math.round(e.at - click) })),
    };
  });
  summary.timings_ms.page_click_to_ready = pageTimings.ready;
  summary.timings_ms.page_click_to_rfb_connect = pageTimings.rfb_connect;
  summary.timings_ms.page_click_to_first_frame = pageTimings.first_frame;
  summary.state_log = pageTimings.states.filter((e) => e.id === sessionId);
  const stats = await sampleCanvas();
  check(stats.colors >= 3, `canvas looks uniform: ${JSON.stringify(stats)}`);
  log(`first frame after ${summary.timings_ms.click_to_first_frame} ms (canvas ${stats.width}x${stats.height}, ${stats.colors} colours)`);
  // The first frames of a real desktop may be the bare X root (black + cursor) while the
  // desktop environment starts: screenshot until it shows a painted desktop (or give up).
  const screenPath = join(OUT, "03-desktop-screen-only.png");
  let pngStats = null;
  const paintDeadline = t() + 60000;
  for (;;) {
    await page.locator("#desktop-screen").screenshot({ path: screenPath });
    pngStats = imageStats(decodePng(readFileSync(screenPath)).rgba, 3);
    if (looksLikeContent(pngStats) || t() > paintDeadline) break;
    await page.waitForTimeout(250);
  }
  summary.timings_ms.click_to_desktop_painted = Math.round(t() - clickAt);
  summary.screenshot_stats = pngStats;
  summary.screenshots.push(screenPath);
  const desktopPng = await shot("03-desktop");
  check(looksLikeContent(pngStats), `desktop screenshot looks blank/uniform: ${JSON.stringify(pngStats)}`);
  log(`screenshot ${desktopPng} shows content (${pngStats.distinctColors} colours, dominant ${(pngStats.dominantShare * 100).toFixed(1)} %)`);
  check(!(await page.locator("#desktop-overlay").isVisible()), "disconnect overlay visible after connect");
  check(
    (await page.locator("input[type=password], [class*=noVNC_password]").count()) === 0,
    "a password prompt appeared",
  );

  // keyboard: the desktop has the focus; Ctrl+Alt+Shift+M hands it back to the toolbar
  await page.locator("#desktop-screen canvas").click({ position: { x: 5, y: 5 } });
  await page.keyboard.press("Control+Alt+Shift+KeyM");
  check(
    await page.evaluate(() => document.activeElement?.id === "desktop-back"),
    "Ctrl+Alt+Shift+M did not move the keyboard focus to the desktop toolbar",
  );
  check((await page.title()).includes("Desktop"), `page title: ${await page.title()}`);

  // --- 4. remote resize follows the browser window ------------------------------------
  const remoteFollows = async (label, width, height) => {
    const t0 = t();
    await page.setViewportSize({ width, height });
    const want = await page.evaluate(() => {
      const s = document.querySelector("#desktop-screen");
      return { width: s.clientWidth, height: s.clientHeight };
    });
    await expectSoon(
      page.waitForFunction(
        ({ w, h }) => {
          const c = document.querySelector("#desktop-screen canvas");
          return c && Math.abs(c.width - w) <= 2 && Math.abs(c.height - h) <= 2;
        },
        { w: want.width, h: want.height },
        { timeout: 20000 },
      ),
      `remote framebuffer did not follow the window to ${want.width}x${want.height}`,
    );
    const ms = Math.round(t() - t0);
    summary.timings_ms[`resize_${label}`] = ms;
    log(`remote framebuffer followed the window to ${want.width}x${want.height} in ${ms} ms`);
    return want;
  };
  const initial = await sampleCanvas();
  const small = await remoteFollows("smaller", 1024, 680);
  check(small.width !== initial.width || small.height !== initial.height, "resize did not change the size");
  await page.waitForTimeout(300);
  await shot("04-resized-1024x680");
  await remoteFollows("larger", 1440, 900);

  // --- 5. clipboard both ways (stand-in only: needs access to the remote display) -----
  const remoteText = `from the desktop ${Date.now()}`;
  const clipboardReachable =
    STANDIN &&
    (await page.request.post(`${BASE}/_standin/sessions/${sessionId}/clipboard`, { data: { text: remoteText } })).ok();
  if (STANDIN && !clipboardReachable) {
    summary.problems.push("clipboard not checked: the stand-in cannot set the X clipboard (install xclip)");
  }
  if (clipboardReachable) {
    await expectSoon(
      page.waitForFunction((txt) => document.querySelector("#clipboard-text").value === txt, remoteText, {
        timeout: 10000,
      }),
      "text copied on the desktop did not reach the clipboard panel",
    );
    log("remote clipboard arrived in the clipboard panel");
    await page.click("#desktop-clipboard-toggle");
    const localText = `from the browser ${Date.now()}`;
    await page.fill("#clipboard-text", localText);
    await page.click("#clipboard-send");
    let got = "";
    for (let i = 0; i < 50 && got !== localText; i++) {
      await page.waitForTimeout(100);
      got = (await (await page.request.get(`${BASE}/_standin/sessions/${sessionId}/clipboard`)).json()).text;
    }
    check(got === localText, `desktop clipboard is '${got}', expected '${localText}'`);
    log("clipboard panel text became the desktop's clipboard");
    await shot("05-clipboard");
    await page.click("#desktop-clipboard-toggle");
  }

  // --- 6. disconnect, then reconnect with a fresh ticket ------------------------------
  await page.click("#desktop-disconnect");
  await page.locator("#desktop-overlay").waitFor({ state: "visible" });
  const overlayText = await page.locator("#overlay-text").innerText();
  check(/reconnect/i.test(overlayText), `unclear disconnect message: ${overlayText}`);
  check(await page.locator("#overlay-reconnect").isVisible(), "no reconnect button");
  await shot("06-disconnected");
  const t6 = t();
  await page.click("#overlay-reconnect");
  await expectSoon(
    page.locator("#desktop-view[data-connection='connected']").waitFor({ timeout: 20000 }),
    "reconnect (with a fresh ticket) failed",
  );
  await page.locator("#desktop-overlay").waitFor({ state: "hidden" });
  summary.timings_ms.reconnect = Math.round(t() - t6);
  log(`reconnected in ${summary.timings_ms.reconnect} ms`);

  // --- 7. scheduler banner (stand-in only) ----------------------------------------
  if (STANDIN) {
    await page.request.post(`${BASE}/_standin/health`, { data: { slurm: false } });
    await expectSoon(
      page.locator("#health-banner").waitFor({ state: "visible", timeout: 10000 }),
      "no banner while the scheduler is unreachable",
    );
    const banner = await page.locator("#health-banner").innerText();
    check(/unreachable/i.test(banner) && /keep running/i.test(banner), `banner: ${banner}`);
    await page.click("#desktop-back");
    await page.locator("#portal-view").waitFor({ state: "visible" });
    await shot("07-scheduler-unreachable");
    await page.request.post(`${BASE}/_standin/health`, { data: { slurm: true } });
    await page.locator("#health-banner").waitFor({ state: "hidden", timeout: 10000 });
    log("scheduler-unreachable banner shown and cleared");
    await page.locator(`[data-session-id="${sessionId}"] [data-part=open]`).click();
    await page.locator("#desktop-view[data-connection='connected']").waitFor({ timeout: 20000 });
  }

  // --- 8. stop the desktop and see it end ------------------------------------------
  const t8 = t();
  await page.click("#desktop-stop");
  await page.click("#desktop-stop"); // confirm
  await page.locator("#desktop-overlay").waitFor({ state: "visible", timeout: 60000 });
  await expectSoon(
    page.waitForFunction((id) => window.vizdesk.sessions.find((s) => s.id === id)?.state === "ENDED", sessionId, {
      timeout: 60000,
    }),
    "the stopped session was not shown as ENDED",
  );
  await page.waitForFunction(() => /ended/i.test(document.querySelector("#overlay-text").textContent));
  summary.timings_ms.stop_to_ended = Math.round(t() - t8);
  await shot("08-ended");
  await page.click("#overlay-back");
  await page.locator(`[data-session-id="${sessionId}"][data-state="ENDED"]`).waitFor();
  log(`session ENDED ${summary.timings_ms.stop_to_ended} ms after stop`);
  sessionId = null;
  await shot("09-portal-after-stop");

  // --- 9. keyboard: the launch button is reachable with Tab ---------------------------
  await page.locator("#launch-cpus").focus();
  let reached = false;
  for (let i = 0; i < 12 && !reached; i++) {
    await page.keyboard.press("Tab");
    reached = await page.evaluate(() => document.activeElement?.id === "launch-button");
  }
  check(reached, "launch button not reachable with the keyboard");

  // --- 10. expired token → sign in again ------------------------------------------
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const expired = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub: "x", exp: 1000 })}.c2ln`;
  await page.goto(`${BASE}/#token=${expired}`);
  await page.locator("#signin-view").waitFor({ state: "visible" });
  const reason = await page.locator("#signin-reason").innerText();
  check(/expired/i.test(reason), `expired token message: ${reason}`);
  await shot("10-signin-expired");
  log("expired token leads to sign-in with 'expired' message");

  // --- 11. a token the server refuses (bad signature) → sign in again ---------------
  const [h, p] = TOKEN.split(".");
  await page.goto(`${BASE}/#token=${h}.${p}.invalid`);
  await page.locator("#signin-view").waitFor({ state: "visible" });
  await page.waitForFunction(() => /not accepted|expired/i.test(document.querySelector("#signin-reason").textContent));
  check(
    (await page.evaluate(() => sessionStorage.getItem("vizdesk.token"))) === null,
    "refused token still in sessionStorage",
  );
  log(`refused token (401) leads to sign-in: ${await page.locator("#signin-reason").innerText()}`);

  // --- 12. paste a token into the sign-in form --------------------------------------
  await page.fill("#token-input", TOKEN);
  await page.focus("#token-input");
  await page.keyboard.press("Tab");
  check(
    await page.evaluate(() => document.activeElement?.matches("#signin-form button[type=submit]")),
    "Tab from the token field does not reach the sign-in button",
  );
  await page.keyboard.press("Enter");
  await page.locator("#portal-view").waitFor({ state: "visible" });
  log("signed in again by pasting the token (keyboard only)");

  summary.csp_header = cspHeader;
  if (!cspHeader) summary.problems.push("the page was served without a Content-Security-Policy header");
  check(cspViolations.length === 0, `CSP violations: ${cspViolations.join("; ")}`);
  check(foreign.length === 0, `third-party requests: ${foreign.join(", ")}`);
  const relevantErrors = consoleErrors.filter((e) => !/Failed to load resource|WebSocket/.test(e));
  if (relevantErrors.length) summary.problems.push(...relevantErrors.map((e) => `console: ${e}`));
  summary.ok = true;
} catch (exc) {
  summary.ok = false;
  summary.error = exc instanceof Failure ? exc.message : String(exc?.stack ?? exc);
  if (page) {
    try {
      const path = join(OUT, "failure.png");
      await page.screenshot({ path });
      summary.screenshots.push(path);
    } catch {
      /* ignore */
    }
  }
} finally {
  if (sessionId) {
    // do not leave a desktop running after a failure
    try {
      await fetch(`${BASE}/api/v1/sessions/${sessionId}`, {
        method: "DELETE",
        headers: { Authorization: `Bearer ${TOKEN}` },
      });
    } catch {
      /* ignore */
    }
  }
  await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}

writeFileSync(join(OUT, "summary.json"), `${JSON.stringify(summary, null, 2)}\n`);
console.log(JSON.stringify(summary, null, 2));
if (!summary.ok) {
  console.error(`[portal-e2e] FAILED: ${summary.error}`);
  process.exit(1);
}
console.log("[portal-e2e] OK");
