// Real-browser test of desktop sharing and awareness (issue 14): TWO browser contexts,
// the owner (alice) and a recipient (bob), on the real daemon (playwright-core + Debian's
// /usr/bin/chromium, never a downloaded browser).
//
// Env:  VIZDESK_URL           base URL of a daemon whose config has a short idle warning,
//                             a walltime warning point soon after start and extend allowed
//                             (tests/browser/test_share_browser.py starts one)
//       VIZDESK_OWNER_TOKEN   JWT of the owner; VIZDESK_VIEWER_TOKEN  JWT of the recipient
//       VIZDESK_PYTHON        python with the repo's test helpers (reads the desktop's X
//                             server: pointer and pressed keys, tests/helpers/xprobe.py)
//       VIZDESK_TIME_LIMIT    minutes of the owner's desktop (default 30)
//       VIZDESK_OUTPUT        screenshots + summary.json (default test-output/browser/share)
//       VIZDESK_CHROMIUM      browser binary (default /usr/bin/chromium)
// Steps: owner launches a desktop and opens it; creates a view link in the share panel;
// the recipient opens /?share=<id> and sees frames; the recipient's mouse and keys do not
// reach the X server (the owner's do); the owner sees bob in "Connected now" and
// disconnects him, the recipient's view closes; the revoked link no longer opens; the
// walltime banner first, then the idle warning banner (and a browser Notification) with
// "Keep it running"; the walltime banner's "Add N min" (scontrol); the card's thumbnail,
// queue estimate, relaunch after stop (with the time asked for, not the extended one).
// axe-core on every new view (0 violations). Writes summary.json.

import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { resolve } from "node:path";
import { chromium } from "playwright-core";

const BASE = (process.env.VIZDESK_URL ?? "").replace(/\/+$/, "");
const OWNER = process.env.VIZDESK_OWNER_TOKEN ?? "";
const VIEWER = process.env.VIZDESK_VIEWER_TOKEN ?? "";
const PY = process.env.VIZDESK_PYTHON ?? "python3";
const TIME_LIMIT = Number(process.env.VIZDESK_TIME_LIMIT ?? 30);
const OUT = resolve(process.env.VIZDESK_OUTPUT ?? "test-output/browser/share");
const CHROMIUM = process.env.VIZDESK_CHROMIUM ?? "/usr/bin/chromium";
if (!BASE || !OWNER || !VIEWER) {
  console.error("VIZDESK_URL, VIZDESK_OWNER_TOKEN and VIZDESK_VIEWER_TOKEN are required");
  process.exit(2);
}

const summary = { target: BASE, steps: [], screenshots: [], axe: {}, probe: {}, problems: [], timings_ms: {} };
const log = (msg) => {
  summary.steps.push(msg);
  console.log(`[share-e2e] ${msg}`);
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

mkdirSync(OUT, { recursive: true });
const axeSource = readFileSync(resolve("node_modules/axe-core/axe.min.js"), "utf8");
const origin = new URL(BASE).origin;

/** Pointer position and whether 'a' is held, read from the desktop's own X server. */
function xprobe(sid) {
  const code = "import json,sys\nfrom tests.helpers.xprobe import desktop_env, probe\n" +
    "print(json.dumps(probe(desktop_env(sys.argv[1]), 0x61)))";
  return JSON.parse(execFileSync(PY, ["-c", code, sid], { encoding: "utf8", timeout: 20000 }));
}

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});

async function newPage(name) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  await context.grantPermissions(["notifications", "clipboard-read", "clipboard-write"], { origin });
  // records the page's browser notifications (injected over CDP, not through the page's CSP)
  await context.addInitScript(() => {
    window.__notifications = [];
    const Real = window.Notification;
    class Recording extends Real {
      constructor(title, opts) {
        super(title, opts);
        window.__notifications.push({ title, body: opts?.body ?? "" });
      }
    }
    window.Notification = Recording;
  });
  const page = await context.newPage();
  page.setDefaultTimeout(30000);
  // SetDesktopSize requests the page sends (noVNC asks again while sizes differ)
  resizesSent[name] = 0;
  page.on("websocket", (ws) => ws.on("framesent", (f) => {
    if (typeof f.payload !== "string" && f.payload[0] === 251) {
      resizesSent[name] += 1;
      resizesSent[`${name}_last`] = [f.payload.readUInt16BE(2), f.payload.readUInt16BE(4), f.payload.length];
    }
  }));
  page.on("console", (m) => {
    if (m.type() === "error") summary.problems.push(`${name} console: ${m.text()} (${m.location()?.url ?? ""})`);
  });
  page.on("pageerror", (e) => summary.problems.push(`${name} pageerror: ${e.message}`));
  page.on("request", (req) => {
    const url = req.url();
    if (!url.startsWith("data:") && !url.startsWith("blob:") && new URL(url).origin !== origin) {
      summary.problems.push(`${name} foreign request: ${url}`);
    }
  });
  return { context, page };
}

async function shot(page, name) {
  const path = `${OUT}/${name}.png`;
  await page.screenshot({ path });
  summary.screenshots.push(path);
}

async function axe(page, name) {
  if (!(await page.evaluate(() => typeof window.axe !== "undefined"))) await page.evaluate(axeSource);
  const res = await page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ["violations"] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.length, help: v.help, targets: v.nodes.slice(0, 3).map((n) => n.target.join(" ")) }));
  });
  summary.axe[name] = res;
  check(!res.length, `axe on ${name}: ${JSON.stringify(res)}`);
  log(`axe ${name}: 0 violations`);
}

/** Waits until the noVNC canvas shows non-uniform opaque pixels (real remote frames). */
async function framesShown(page, what) {
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
      { timeout: 60000, polling: 100 },
    ),
    `${what}: no desktop frames on the canvas`,
  );
}

const resizesSent = {};
let sessionId = null;
let relaunchedId = null;
let exitCode = 1;
try {
  const owner = await newPage("owner");
  const viewer = await newPage("viewer");
  const op = owner.page;
  const vp = viewer.page;

  // --- 1. the owner launches a desktop; it opens by itself ------------------------------
  await op.goto(`${BASE}/#token=${encodeURIComponent(OWNER)}`);
  await op.locator("#portal-view").waitFor({ state: "visible" });
  await op.fill("#launch-time", String(TIME_LIMIT));
  // queue estimate in the launch form (sbatch --test-only)
  await op.click("#launch-estimate-button");
  await expectSoon(op.waitForFunction(() => /Slurm expects|No start estimate/.test(document.getElementById("launch-estimate").textContent)), "no queue estimate shown");
  summary.estimate_text = await op.textContent("#launch-estimate");
  log(`estimate: ${summary.estimate_text}`);
  check(/Slurm expects/.test(summary.estimate_text), `Slurm gave no estimate: ${summary.estimate_text}`);
  await axe(op, "owner-launch-estimate");
  await op.click("#launch-button");
  await expectSoon(op.locator("#desktop-view").waitFor({ state: "visible", timeout: 90000 }), "the desktop view did not open");
  await framesShown(op, "owner");
  sessionId = await op.evaluate(() => window.vizdesk.sessions.find((s) => s.state === "READY")?.id);
  check(sessionId, "no READY session");
  log(`owner sees desktop ${sessionId}`);
  await shot(op, "01-owner-desktop");

  // --- 2. the share panel: create a view link, copy it ------------------------------------
  await op.click("#desktop-share-toggle");
  await op.locator("#share-panel").waitFor({ state: "visible" });
  check(await op.evaluate(() => document.activeElement?.id === "share-scope"), "focus did not move into the share panel");
  await axe(op, "share-panel");
  await op.selectOption("#share-scope", "view");
  await op.fill("#share-expiry", "30");
  await op.click("#share-create");
  const linkInput = op.locator("#share-links li input");
  await expectSoon(linkInput.first().waitFor(), "the new link is not listed");
  const link = await linkInput.first().inputValue();
  check(/\/\?share=[0-9a-f]+$/.test(link), `odd link: ${link}`);
  await op.click('#share-links [data-action="copy"]');
  const copied = await op.evaluate(() => navigator.clipboard.readText());
  check(copied === link, `copied ${copied} instead of ${link}`);
  log(`view link created and copied: ${link}`);
  await shot(op, "02-owner-share-panel");
  await axe(op, "share-panel-with-link");

  // --- 3. the recipient opens the link: frames, view only -------------------------------
  await vp.goto(`${link}#token=${encodeURIComponent(VIEWER)}`);
  await expectSoon(vp.locator("#desktop-view").waitFor({ state: "visible" }), "the recipient's desktop view did not open");
  await framesShown(vp, "recipient");
  const shared = await vp.evaluate(() => window.vizdesk.shared);
  check(shared && shared.scope === "view" && shared.owner, `recipient page: ${JSON.stringify(shared)}`);
  const vtitle = await vp.textContent("#desktop-title");
  check(/view only/.test(vtitle), `title: ${vtitle}`);
  check(await vp.locator("#desktop-stop").isHidden(), "a recipient must not get the stop button");
  log(`recipient sees frames: "${vtitle}"`);
  await shot(vp, "03-recipient-view");
  await axe(vp, "recipient-view");

  // --- 4. the recipient's input does not reach the desktop; the owner's does ---------------
  const before = xprobe(sessionId);
  const vcanvas = vp.locator("#desktop-screen canvas");
  const vbox = await vcanvas.boundingBox();
  await vcanvas.click({ position: { x: Math.round(vbox.width / 2) + 17, y: Math.round(vbox.height / 2) + 11 } });
  await vp.mouse.move(vbox.x + 40, vbox.y + 60, { steps: 5 });
  await vp.keyboard.down("a");
  await vp.keyboard.type("typed by the viewer");
  await vp.waitForTimeout(1500);
  const during = xprobe(sessionId);
  await vp.keyboard.up("a");
  summary.probe.viewer = { before, during };
  check(during.x === before.x && during.y === before.y, `the viewer moved the desktop's pointer: ${JSON.stringify(summary.probe.viewer)}`);
  check(during.pressed === false, "the viewer's held key reached the desktop");
  // the same probe sees the owner's input: the check above can fail
  // The owner clicks at whole client pixels and expects the desktop pixel noVNC computes
  // from the canvas's own box (it truncates clientX - box.left): the box can sit at a
  // fractional offset (toolbar and banner heights are in rem), which moves it by one.
  const aim = () => op.evaluate(() => {
    const c = document.querySelector("#desktop-screen canvas");
    const r = c.getBoundingClientRect();
    const cx = Math.ceil(r.left) + 211;
    const cy = Math.ceil(r.top) + 133;
    return {
      cx, cy,
      x: Math.trunc(((cx - r.left) * c.width) / r.width),
      y: Math.trunc(((cy - r.top) * c.height) / r.height),
      box: [r.left, r.top, r.width, r.height],
    };
  });
  let target = await aim();
  let seen = null;
  let hit = false;
  for (let attempt = 0; attempt < 3 && !hit; attempt++) {
    await op.mouse.click(target.cx, target.cy); // noVNC takes the keyboard on click
    await op.keyboard.down("a");
    const until = Date.now() + 5000;
    while (Date.now() < until) {
      seen = xprobe(sessionId);
      hit = seen.x === target.x && seen.y === target.y && seen.pressed;
      if (hit) break;
      await op.waitForTimeout(200);
    }
    await op.keyboard.up("a");
    if (hit) break;
    // only a layout change between aiming and clicking (a banner appeared) earns a retry
    const again = await aim();
    if (JSON.stringify(again.box) === JSON.stringify(target.box)) break;
    target = again;
  }
  summary.probe.owner = seen;
  summary.probe.owner_target = target;
  check(hit, `the owner's input did not arrive: ${JSON.stringify({ seen, target })}`);
  log(`viewer input dropped (pointer stayed at ${before.x},${before.y}, 'a' not held); owner input arrived`);

  // --- 5. the owner sees the viewer and disconnects him ------------------------------------
  const bobRow = op.locator('#share-viewers li[data-user="bob"]');
  await expectSoon(bobRow.waitFor(), "the owner does not see bob in 'Connected now'");
  const row = await bobRow.textContent();
  check(/view only/.test(row), `viewer row: ${row}`);
  await shot(op, "04-owner-viewers");
  await axe(op, "share-panel-viewers");
  const kickedAt = performance.now();
  await bobRow.locator('[data-action="kick"]').click();
  await expectSoon(vp.locator("#desktop-overlay").waitFor({ state: "visible", timeout: 10000 }), "the recipient's view did not close");
  summary.timings_ms.kick_to_closed = Math.round(performance.now() - kickedAt);
  check(!(await vp.evaluate(() => window.vizdesk.connected)), "the recipient is still connected");
  await expectSoon(bobRow.waitFor({ state: "detached" }), "bob is still listed after the kick");
  log(`kicked: the recipient's view closed after ${summary.timings_ms.kick_to_closed} ms`);
  await shot(vp, "05-recipient-kicked");
  await axe(vp, "recipient-kicked");

  // --- 6. revoke: the link no longer opens ---------------------------------------------------
  await op.click('#share-links [data-action="revoke"]');
  await expectSoon(op.waitForFunction(() => /revoked/.test(document.querySelector("#share-links li label")?.textContent ?? "")), "the link is not shown revoked");
  await vp.click("#overlay-reconnect");
  await expectSoon(vp.waitForFunction(() => /cannot be opened/.test(document.getElementById("overlay-text").textContent) && !document.getElementById("desktop-overlay").hidden), "a revoked link still opened");
  log(`revoked: "${await vp.textContent("#overlay-text")}"`);
  await shot(vp, "06-recipient-revoked");
  await op.click("#share-close");

  // --- 7. idle warning banner + notification, "Keep it running" -------------------------------
  // The walltime warning (9 s after the start) came first: its banner moved the desktop
  // view, and noVNC's desktop-size requests after that must not count as input.
  const wall = op.locator(`.warning-banner[data-kind="walltime"][data-session-id="${sessionId}"]`);
  await expectSoon(wall.waitFor({ state: "visible", timeout: 30000 }), "no walltime warning banner before the idle one");
  const idle = op.locator(`.warning-banner[data-kind="idle"][data-session-id="${sessionId}"]`);
  await expectSoon(idle.waitFor({ state: "visible", timeout: 60000 }), "no idle warning banner");
  log(`idle banner: ${await idle.locator("p").textContent()}`);
  await shot(op, "07-owner-idle-banner");
  await axe(op, "idle-banner");
  const notes = await op.evaluate(() => window.__notifications);
  check(notes.some((n) => /no keyboard or mouse input/.test(n.body)), `no browser notification: ${JSON.stringify(notes)}`);
  const keep = op.waitForResponse((r) => r.url().endsWith(`/sessions/${sessionId}/keep`));
  await idle.locator('[data-part="action"]').click();
  check((await keep).status() === 200, "keep failed");
  await expectSoon(idle.waitFor({ state: "detached" }), "the idle banner stayed after keep");
  log("kept: banner gone");

  // --- 8. walltime warning banner (shown since step 7), "Add N min" ---------------------------
  await expectSoon(wall.waitFor({ state: "visible", timeout: 5000 }), "the walltime warning banner went away");
  log(`walltime banner: ${await wall.locator("p").textContent()}`);
  {
    // the banner moved the desktop once: the page asks for the new size, then stops
    const before = resizesSent.owner;
    await op.waitForTimeout(3000);
    summary.resizes_in_3s_with_banner = resizesSent.owner - before;
    const dims = await op.evaluate(() => { const s = document.getElementById("desktop-screen"); const c = s.querySelector("canvas"); return { client: [s.clientWidth, s.clientHeight], offset: [s.offsetWidth, s.offsetHeight], rect: s.getBoundingClientRect().toJSON(), canvas: [c.width, c.height] }; });
    summary.screen_after_banner = dims;
    log(`SetDesktopSize requests in 3 s with the banner shown: ${summary.resizes_in_3s_with_banner} (${resizesSent.owner} in all; last ${JSON.stringify(resizesSent.owner_last)}; ${JSON.stringify(dims)})`);
    // a fractional screen size made noVNC ask again every 100 ms, forever
    check(summary.resizes_in_3s_with_banner <= 1, `the page keeps asking for a desktop size: ${JSON.stringify(summary.resizes_in_3s_with_banner)}`);
    const r = dims.rect;
    check([r.x, r.y, r.width, r.height].every(Number.isInteger), `the desktop is not on whole pixels: ${JSON.stringify(r)}`);
    check(dims.canvas[0] === r.width && dims.canvas[1] === r.height, `the desktop does not fill the view: ${JSON.stringify(dims)}`);
  }
  await shot(op, "08-owner-walltime-banner");
  await axe(op, "walltime-banner");
  const endsBefore = await op.evaluate((id) => window.vizdesk.sessions.find((s) => s.id === id).ends_at, sessionId);
  const ext = op.waitForResponse((r) => r.url().endsWith(`/sessions/${sessionId}/extend`));
  await wall.locator('[data-part="action"]').click();
  const extResp = await ext;
  check(extResp.status() === 200, `extend failed: ${extResp.status()} ${await extResp.text()}`);
  const endsAfter = await op.evaluate((id) => window.vizdesk.sessions.find((s) => s.id === id).ends_at, sessionId);
  check(Date.parse(endsAfter) > Date.parse(endsBefore), `ends_at did not move: ${endsBefore} → ${endsAfter}`);
  await expectSoon(wall.waitFor({ state: "detached" }), "the walltime banner stayed after extend");
  log(`extended: ends ${endsBefore} → ${endsAfter}`);

  // --- 9. the card: remaining time, thumbnail, share/extend buttons -----------------------
  await op.click("#desktop-back");
  await op.locator("#portal-view").waitFor({ state: "visible" });
  const card = op.locator(`[data-session-id="${sessionId}"]`);
  const thumb = card.locator('[data-part="thumb"]');
  await expectSoon(thumb.waitFor({ state: "visible", timeout: 30000 }), "no thumbnail on the READY card");
  const size = await thumb.evaluate((img) => ({ w: img.naturalWidth, h: img.naturalHeight, src: img.src.slice(0, 22) }));
  check(size.w > 0 && size.w <= 320 && size.h > 0 && size.src.startsWith("data:image/png;base64,"), `thumbnail: ${JSON.stringify(size)}`);
  const left = await card.locator('[data-part="timeleft"]').textContent();
  check(/left$/.test(left), `remaining time: ${left}`);
  check(await card.locator('[data-part="share"]').isVisible(), "no Share button on the READY card");
  check(await card.locator('[data-part="extend"]').isVisible(), "no extend button on the READY card");
  summary.thumbnail = size;
  log(`card: ${left}; thumbnail ${size.w}x${size.h}`);
  await shot(op, "09-owner-card-thumbnail");
  await axe(op, "portal-card-thumbnail");

  // --- 10. stop → ENDED, relaunch with the same parameters ------------------------------------
  await card.locator('[data-part="stop"]').click();
  await card.locator('[data-part="stop"]').click();
  await expectSoon(op.waitForFunction((id) => window.vizdesk.sessions.find((s) => s.id === id)?.state === "ENDED", sessionId, { timeout: 30000 }), "the desktop did not end");
  const relaunch = card.locator('[data-part="relaunch"]');
  await relaunch.waitFor({ state: "visible" });
  await axe(op, "portal-ended-card");
  await shot(op, "10-owner-ended-card");
  const rel = op.waitForResponse((r) => r.url().endsWith(`/sessions/${sessionId}/relaunch`));
  await relaunch.click();
  const relResp = await rel;
  check(relResp.status() === 201, `relaunch: ${relResp.status()}`);
  const again = await relResp.json();
  relaunchedId = again.id;
  // the time asked for at launch: the minutes added in step 8 were for the old desktop
  check(again.time_limit_minutes === TIME_LIMIT, `relaunched with ${again.time_limit_minutes} min`);
  await expectSoon(op.locator("#desktop-view").waitFor({ state: "visible", timeout: 90000 }), "the relaunched desktop did not open");
  await framesShown(op, "relaunched");
  log(`relaunched as ${relaunchedId}, open with frames`);
  await shot(op, "11-owner-relaunched");

  // expected: the browser logs the 403 of step 6 (the revoked link's ticket) as an error
  const revoked = `viewer console: Failed to load resource: the server responded with a status of 403 (Forbidden) (${link.replace(/\/\?share=/, "/api/v1/shares/")}/ticket)`;
  const problems = summary.problems.filter((p) => p !== revoked && !/Got data while (in an invalid state|disconnected)/.test(p));
  check(!problems.length, `page problems: ${problems.join("; ")}`);
  summary.ok = true;
  exitCode = 0;
} catch (exc) {
  summary.ok = false;
  summary.error = String(exc?.stack ?? exc);
  console.error(summary.error);
} finally {
  for (const id of [sessionId, relaunchedId]) {
    if (!id) continue;
    await fetch(`${BASE}/api/v1/sessions/${id}`, { method: "DELETE", headers: { Authorization: `Bearer ${OWNER}` } }).catch(() => {});
  }
  await browser.close().catch(() => {});
  writeFileSync(`${OUT}/summary.json`, JSON.stringify(summary, null, 2));
}
process.exit(exitCode);
