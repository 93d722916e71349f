// Real-browser test of the portal's automatic reconnect (issue 15): with a desktop open,
// the daemon serving it goes away and comes back; the page shows "reconnecting…", gets a
// fresh ticket, opens a new connection on the same screen element and shows new frames,
// without a reload and with nothing else changed (same view, URL and title, one canvas,
// the clipboard panel still open with the keyboard focus still in it, no overlay); the
// events stream comes back too and the session list is fetched again once.
//
// Env:  VIZDESK_URL, VIZDESK_TOKEN, VIZDESK_OUTPUT, VIZDESK_CHROMIUM, VIZDESK_TIMEOUT_S as
//       for portal_e2e.mjs
//       VIZDESK_STANDIN=1  the target is standin_server.py: the drops are acted out with
//                          its /_standin/drop (close 1012, a cut connection 1006, then a
//                          final 1008 which must NOT reconnect by itself)
//       otherwise the daemon is restarted by whoever runs this script (the pytest wrapper
//       test_portal_browser.py, which owns the daemon's process): for each round the
//       script prints a line `VIZDESK-E2E restart <graceful|kill>` and waits for a line
//       `restarted` on its stdin.
// Writes screenshots + summary.json to VIZDESK_OUTPUT.

import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const BASE = (process.env.VIZDESK_URL ?? "").replace(/\/+$/, "");
const TOKEN = process.env.VIZDESK_TOKEN ?? "";
const OUT = resolve(process.env.VIZDESK_OUTPUT ?? "test-output/browser/reconnect");
const CHROMIUM = process.env.VIZDESK_CHROMIUM ?? "/usr/bin/chromium";
const STANDIN = process.env.VIZDESK_STANDIN === "1";
const TIMEOUT_MS = Number(process.env.VIZDESK_TIMEOUT_S ?? 120) * 1000;

if (!BASE || !TOKEN) {
  console.error("VIZDESK_URL and VIZDESK_TOKEN are required");
  process.exit(2);
}

const summary = { target: BASE, standin: STANDIN, steps: [], rounds: [], screenshots: [], axe: {}, problems: [] };
const t = () => performance.now();
const log = (msg) => {
  summary.steps.push(msg);
  console.log(`[reconnect-e2e] ${msg}`);
};
class Failure extends Error {}
function check(cond, msg) {
  if (!cond) throw new Failure(msg);
}
async function expectSoon(promise, what) {
  try {
    return await promise;
  } catch (exc) {
    throw new Failure(`${what} (${String(exc?.message ?? exc).split("\n")[0]})`);
  }
}

// stdin lines from the wrapper ("restarted")
const stdinLines = [];
let stdinWaiter = null;
if (!STANDIN) {
  createInterface({ input: process.stdin }).on("line", (line) => {
    stdinLines.push(line.trim());
    stdinWaiter?.();
  });
}
async function nextStdinLine(timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (!stdinLines.length) {
    if (Date.now() > deadline) throw new Failure("the wrapper did not answer the restart request");
    await new Promise((res) => {
      stdinWaiter = res;
      setTimeout(res, 500);
    });
  }
  return stdinLines.shift();
}

mkdirSync(OUT, { recursive: true });
const profile = mkdtempSync(join(tmpdir(), "vizdesk-chromium-"));
const axeSource = readFileSync(resolve("node_modules/axe-core/axe.min.js"), "utf8");
const context = await chromium.launchPersistentContext(profile, {
  executablePath: CHROMIUM,
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
  viewport: { width: 1280, height: 800 },
});

let page;
let sessionId = null;
try {
  page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(30000);
  // stand-in: a controllable clock (it runs in real time until fastForward) so the
  // 2-minute give-up can be checked in seconds
  if (STANDIN) await page.clock.install();
  const pageErrors = [];
  page.on("pageerror", (err) => pageErrors.push(err.message));
  const requests = [];
  page.on("request", (req) => requests.push({ at: t(), method: req.method(), url: req.url() }));
  let documentLoads = 0;
  page.on("load", () => documentLoads++);
  await page.addInitScript(() => {
    // what the reconnect indicator and the events state showed, in order
    window.__indicatorLog = [];
    window.__eventsLog = [];
    document.addEventListener("DOMContentLoaded", () => {
      const ind = document.querySelector("#desktop-reconnecting");
      new MutationObserver(() => window.__indicatorLog.push(ind.textContent)).observe(ind, {
        childList: true, characterData: true, subtree: true,
      });
      const ev = document.querySelector("#events-state");
      new MutationObserver(() => window.__eventsLog.push(ev.dataset.mode)).observe(ev, {
        attributes: true, attributeFilter: ["data-mode"],
      });
    });
  });

  async function shot(name) {
    const path = join(OUT, `${name}.png`);
    await page.screenshot({ path });
    summary.screenshots.push(path);
  }
  async function axe(name) {
    if (!(await page.evaluate(() => typeof window.axe !== "undefined"))) await page.evaluate(axeSource);
    const res = await page.evaluate(async () => {
      const r = await window.axe.run(document, { resultTypes: ["violations"] });
      return r.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.map((n) => n.target.join(" ")) }));
    });
    summary.axe[name] = res;
    check(!res.length, `axe on ${name}: ${JSON.stringify(res)}`);
    log(`axe ${name}: 0 violations`);
  }
  /** Waits for a non-uniform frame on the (current) noVNC canvas. */
  async function waitForFrame(what) {
    await expectSoon(
      page.waitForFunction(
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
      ),
      what,
    );
  }
  const snapshot = () =>
    page.evaluate(() => {
      const canvases = document.querySelectorAll("#desktop-screen canvas");
      const c = canvases[0];
      return {
        marker: window.__noReloadMarker ?? null,
        url: window.location.href,
        title: document.title,
        desktopTitle: document.querySelector("#desktop-title").textContent,
        desktopVisible: !document.querySelector("#desktop-view").hidden,
        connection: document.querySelector("#desktop-view").dataset.connection,
        reconnects: Number(document.querySelector("#desktop-view").dataset.reconnects ?? 0),
        closeCode: document.querySelector("#desktop-view").dataset.closeCode ?? null,
        canvases: canvases.length,
        frozen: document.querySelectorAll(".desktop-frozen").length,
        screens: document.querySelectorAll("#desktop-screen > div").length,
        canvasSize: c ? [c.width, c.height] : null,
        overlayHidden: document.querySelector("#desktop-overlay").hidden,
        indicator: document.querySelector("#desktop-reconnecting").textContent,
        clipboardOpen: !document.querySelector("#clipboard-panel").hidden,
        focus: document.activeElement?.id ?? document.activeElement?.tagName ?? null,
        events: document.querySelector("#events-state").dataset.mode,
      };
    });

  // --- sign in, launch, first frame ----------------------------------------------------
  await page.goto(`${BASE}/#token=${encodeURIComponent(TOKEN)}`);
  await page.locator("#portal-view").waitFor({ state: "visible" });
  await page.locator("#events-state[data-mode='live']").waitFor();
  const before = new Set(await page.evaluate(() => window.vizdesk.sessions.map((s) => s.id)));
  await page.click("#launch-button");
  await expectSoon(
    page.waitForFunction(
      (known) =>
        window.vizdesk.sessions.some((s) => !known.includes(s.id)) || !document.querySelector("#launch-errors").hidden,
      [...before],
      { timeout: 15000 },
    ),
    "no session appeared after clicking Launch",
  );
  if (await page.locator("#launch-errors").isVisible()) {
    throw new Failure(`launch refused: ${await page.locator("#launch-errors").innerText()}`);
  }
  sessionId = await page.evaluate((known) => window.vizdesk.sessions.find((s) => !known.includes(s.id)).id, [...before]);
  summary.session_id = sessionId;
  log(`launched session ${sessionId}`);
  await expectSoon(
    page.locator("#desktop-view[data-connection='connected']").waitFor({ timeout: TIMEOUT_MS }),
    "the desktop did not open and connect",
  );
  await waitForFrame("no frame on the noVNC canvas");
  log("desktop connected, first frame drawn");
  await page.evaluate(() => {
    window.__noReloadMarker = "still the same document";
  });
  // the user has the clipboard panel open and is typing in it while the drop happens
  await page.click("#desktop-clipboard-toggle");
  await page.locator("#clipboard-text").waitFor({ state: "visible" });
  await page.focus("#clipboard-text");
  const reference = await snapshot();
  check(reference.canvases === 1, `canvases before: ${reference.canvases}`);
  check(reference.focus === "clipboard-text", `focus before: ${reference.focus}`);

  // --- the rounds: drop, "reconnecting…", back --------------------------------------------
  const rounds = STANDIN
    ? [
        { name: "close-1012", drop: { code: 1012, down_seconds: 3 } },
        { name: "cut-1006", drop: { code: 1006, down_seconds: 1 } },
      ]
    : [{ name: "graceful-restart", restart: "graceful" }, { name: "kill-9-restart", restart: "kill" }];
  let lastUp = t();
  for (const [i, round] of rounds.entries()) {
    const info = { name: round.name };
    // a connection that stayed up 10 s (reconnect.js STABLE_MS) starts the schedule afresh:
    // each round is a new outage, its first retry after 0.25 s
    await page.waitForTimeout(Math.max(0, lastUp + 10500 - t()));
    await page.evaluate(() => {
      window.__indicatorLog.length = 0;
      window.__eventsLog.length = 0;
    });
    const reconnectsBefore = (await snapshot()).reconnects;
    const t0 = t();
    if (round.drop) {
      const r = await page.request.post(`${BASE}/_standin/drop`, { data: round.drop });
      check(r.ok(), `drop failed: ${r.status()}`);
    } else {
      console.log(`VIZDESK-E2E restart ${round.restart}`);
    }
    // the indicator shows while the connection is down
    await expectSoon(
      page.waitForFunction(() => /reconnecting/i.test(window.__indicatorLog.join("|")), null, {
        timeout: 60000, polling: 50,
      }),
      `${round.name}: the page did not show "reconnecting…"`,
    );
    info.indicator_after_ms = Math.round(t() - t0);
    const during = await snapshot();
    info.during = during;
    if (/reconnecting/i.test(during.indicator)) {
      // the last picture stays (dimmed) instead of a blank view
      // (a new attempt's canvas may be there already, still empty)
      check(during.frozen === 1 && during.canvases <= 1, `while reconnecting: ${JSON.stringify(during)}`);
      check(await page.locator("#desktop-reconnecting").isVisible(), "the reconnecting indicator is not visible");
      await shot(`${String(i + 1).padStart(2, "0")}-${round.name}-reconnecting`);
      if (i === 0) await axe("desktop-reconnecting");
    }
    info.close_code = during.closeCode;
    log(`${round.name}: "reconnecting…" shown after ${info.indicator_after_ms} ms (close code ${during.closeCode})`);
    if (!round.drop) {
      const answer = await nextStdinLine(120000);
      check(answer === "restarted", `wrapper answered: ${answer}`);
      info.restarted_after_ms = Math.round(t() - t0);
    }
    await expectSoon(
      page.waitForFunction(
        (n) => {
          const v = document.querySelector("#desktop-view");
          return Number(v.dataset.reconnects ?? 0) > n && v.dataset.connection === "connected";
        },
        reconnectsBefore,
        { timeout: 90000, polling: 50 },
      ),
      `${round.name}: the desktop did not reconnect by itself`,
    );
    info.reconnected_after_ms = Math.round(t() - t0);
    lastUp = t();
    await waitForFrame(`${round.name}: no new frame after the reconnect`);
    info.frame_after_ms = Math.round(t() - t0);
    await expectSoon(
      page.waitForFunction(() => !document.querySelector(".desktop-frozen"), null, { timeout: 10000 }),
      `${round.name}: the kept picture was not replaced by the new connection's`,
    );
    await expectSoon(
      page.locator("#events-state[data-mode='live']").waitFor({ state: "attached", timeout: 30000 }),
      `${round.name}: the events stream did not come back`,
    );
    const after = await snapshot();
    info.after = after;
    info.indicator_log = await page.evaluate(() => window.__indicatorLog.slice());
    info.events_log = await page.evaluate(() => window.__eventsLog.slice());
    // from the outage on: the page may have fetched its fresh ticket before the wrapper
    // reported the restart done (a daemon that is back within a second)
    info.tickets = requests.filter(
      (r) => r.at >= t0 && r.method === "POST" && /\/sessions\/[^/]+\/connect$/.test(r.url),
    ).length;
    info.list_fetches = requests.filter(
      (r) => r.at >= t0 && r.method === "GET" && /\/api\/v1\/sessions(\?|$)/.test(r.url),
    ).length;
    summary.rounds.push(info);
    check(after.marker === reference.marker && documentLoads === 1, "the page was reloaded");
    check(after.url === reference.url, `URL changed: ${after.url}`);
    check(after.title === reference.title, `title changed: ${after.title}`);
    check(after.desktopTitle === reference.desktopTitle, `desktop title changed: ${after.desktopTitle}`);
    check(after.desktopVisible && after.overlayHidden, "the desktop view changed (overlay shown or view left)");
    check(after.canvases === 1 && after.screens === 1, `${after.canvases} canvases, ${after.screens} screens`);
    check(after.indicator === "", `indicator left: ${after.indicator}`);
    check(after.clipboardOpen, "the clipboard panel closed");
    check(after.focus === "clipboard-text", `the keyboard focus moved to ${after.focus}`);
    check(after.reconnects === reconnectsBefore + 1, `reconnects: ${after.reconnects}`);
    check(info.events_log.includes("reconnecting") || info.events_log.includes("connecting"), `events: ${info.events_log}`);
    check(info.list_fetches >= 1, "the session list was not fetched again after the events stream came back");
    await shot(`${String(i + 1).padStart(2, "0")}-${round.name}-back`);
    log(
      `${round.name}: reconnected after ${info.reconnected_after_ms} ms, new frame after ${info.frame_after_ms} ms ` +
        `(${info.tickets} ticket(s) fetched, list fetched ${info.list_fetches}×, canvas ${after.canvasSize})`,
    );
  }
  await axe("desktop-after-reconnect");

  // --- stand-in: an outage longer than 2 minutes → the page gives up, Reconnect works ----
  if (STANDIN) {
    const n = (await snapshot()).reconnects;
    await page.waitForTimeout(10500); // a stable connection: a fresh outage
    await page.request.post(`${BASE}/_standin/drop`, { data: { code: 1006, down_seconds: 3600 } });
    await page.waitForFunction(() => /reconnecting/i.test(document.querySelector("#desktop-reconnecting").textContent));
    let gaveUp = false;
    for (let i = 0; i < 80 && !gaveUp; i++) {
      await page.clock.fastForward(4000); // the next attempt is due: a ticket request → 503
      await page.waitForTimeout(150);
      gaveUp = await page.locator("#desktop-overlay").isVisible();
    }
    check(gaveUp, "the page did not give up after 2 minutes of failed attempts");
    const text = await page.locator("#overlay-text").innerText();
    check(/could not be restored for 2 minutes/.test(text), `give-up message: ${text}`);
    check((await snapshot()).indicator === "", "indicator left after the give-up");
    check(await page.locator("#overlay-reconnect").isVisible(), "no Reconnect button after the give-up");
    await shot("09-gave-up");
    await axe("desktop-gave-up");
    await page.request.post(`${BASE}/_standin/drop`, { data: { code: 1000, down_seconds: 0 } }); // up again
    await page.click("#overlay-reconnect");
    await page.locator("#desktop-view[data-connection='connected']").waitFor({ timeout: 20000 });
    check((await snapshot()).reconnects === n, "the Reconnect button counted as an automatic reconnect");
    await waitForFrame("no frame after Reconnect");
    log(`gave up after 2 minutes (clock run forward): "${text}"; Reconnect connects again`);
  }

  // --- a final close (stand-in: 1008, a kicked viewer) is not reconnected by itself ----
  if (STANDIN) {
    const n = (await snapshot()).reconnects;
    await page.request.post(`${BASE}/_standin/drop`, { data: { code: 1008, down_seconds: 0 } });
    await page.locator("#desktop-overlay").waitFor({ state: "visible", timeout: 10000 });
    await page.waitForTimeout(1500);
    const s = await snapshot();
    check(s.reconnects === n && s.connection === "disconnected", `1008 reconnected by itself: ${JSON.stringify(s)}`);
    check(s.indicator === "", "indicator shown after a final close");
    check(await page.locator("#overlay-reconnect").isVisible(), "no Reconnect button after a final close");
    await shot("10-final-close-1008");
    await page.click("#overlay-reconnect");
    await page.locator("#desktop-view[data-connection='connected']").waitFor({ timeout: 20000 });
    log("a 1008 close is final: overlay with Reconnect, which connects again");
  }

  // --- stop the desktop ------------------------------------------------------------------
  await page.click("#desktop-stop");
  await page.click("#desktop-stop");
  await expectSoon(
    page.waitForFunction((id) => window.vizdesk.sessions.find((s) => s.id === id)?.state === "ENDED", sessionId, {
      timeout: 60000,
    }),
    "the stopped session was not shown as ENDED",
  );
  check((await snapshot()).indicator === "", "indicator shown after the desktop ended");
  sessionId = null;
  log("desktop stopped");
  if (pageErrors.length) summary.problems.push(...pageErrors.map((e) => `pageerror: ${e}`));
  check(!pageErrors.length, `page errors: ${pageErrors.join("; ")}`);
  summary.ok = true;
} catch (exc) {
  summary.ok = false;
  summary.error = exc instanceof Failure ? exc.message : String(exc?.stack ?? exc);
  if (page) {
    try {
      summary.at_failure = await page.evaluate(() => ({
        indicator_log: window.__indicatorLog,
        events_log: window.__eventsLog,
        events: document.querySelector("#events-state")?.dataset.mode,
        connection: document.querySelector("#desktop-view")?.dataset.connection,
        overlay: document.querySelector("#desktop-overlay")?.hidden ? "" : document.querySelector("#overlay-text")?.textContent,
      }));
    } catch {
      /* ignore */
    }
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
  console.error(`[reconnect-e2e] FAILED: ${summary.error}`);
  process.exit(1);
}
console.log("[reconnect-e2e] OK");
process.exit(0);
