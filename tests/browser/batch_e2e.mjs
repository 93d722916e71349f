// Real-browser end-to-end test of the portal's batch side (playwright-core + Debian's
// /usr/bin/chromium, never a downloaded browser), against the real daemon or the stand-in.
//
// Env:  VIZDESK_URL            base URL (e.g. http://127.0.0.1:8080)
//       VIZDESK_TOKEN          a JWT for alice (long-lived)
//       VIZDESK_SHORT_TOKEN    a JWT for alice that expires soon (renewal step; skipped if unset)
//       VIZDESK_SHORT_TOKEN_URL  or: a URL answering {"token": ...} with such a JWT, fetched
//                              when the renewal step starts (its expiry then does not depend
//                              on how long the steps before it took on a busy machine)
//       VIZDESK_RENEW_TOKEN    the fresh JWT pasted in its place (default VIZDESK_TOKEN)
//       VIZDESK_OUTPUT         screenshots + summary.json (default test-output/browser/batch)
//       VIZDESK_CHROMIUM       browser binary (default /usr/bin/chromium)
//       VIZDESK_STANDIN=1      the target is tests/browser/standin_server.py (dev aid)
//       VIZDESK_BIG_TEMPLATE   template with a large file slot (default big-input), VIZDESK_BIG_SLOT (data),
//                              VIZDESK_BIG_FILE_NAME (big.bin), VIZDESK_BIG_MB (200)
//       VIZDESK_CONFIG_TEMPLATE template with a JSON config slot checked by a schema (python-config),
//                              VIZDESK_CONFIG_SLOT (config), VIZDESK_CONFIG_BODY (JSON, default {"n": 100})
//       VIZDESK_CANCEL_TEMPLATE a template whose job runs long enough to cancel (python-script) and
//                              VIZDESK_CANCEL_PARAMS (JSON form values, default {"sleep_seconds": "120"})
//       VIZDESK_UPLOAD_KBPS    upload throttle (CDP) while the reload step runs (default 20000 KB/s)
// Steps: sign-in page (axe); load time to interactive; library (filters, axe); big upload
// reloaded half way and resumed from its offset; refused files (wrong pattern, too big,
// schema error) shown next to the slot and nothing submitted; preview; submit; live
// states without reload; output tail grows; result file + zip downloaded and compared
// byte for byte with the API; a second job cancelled; token renewal with a desktop and an
// upload open (no websocket reconnect, no upload restart). Writes summary.json.

import { mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync, closeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";

const BASE = (process.env.VIZDESK_URL ?? "").replace(/\/+$/, "");
const TOKEN = process.env.VIZDESK_TOKEN ?? "";
const SHORT = process.env.VIZDESK_SHORT_TOKEN ?? "";
const SHORT_URL = process.env.VIZDESK_SHORT_TOKEN_URL ?? "";

async function shortToken() {
  if (!SHORT_URL) return SHORT;
  const resp = await fetch(SHORT_URL);
  if (!resp.ok) throw new Error(`short token from ${SHORT_URL}: HTTP ${resp.status}`);
  return (await resp.json()).token;
}
const RENEW = process.env.VIZDESK_RENEW_TOKEN ?? TOKEN;
const OUT = resolve(process.env.VIZDESK_OUTPUT ?? "test-output/browser/batch");
const CHROMIUM = process.env.VIZDESK_CHROMIUM ?? "/usr/bin/chromium";
const STANDIN = process.env.VIZDESK_STANDIN === "1";
const BIG_T = process.env.VIZDESK_BIG_TEMPLATE ?? "big-input";
const BIG_SLOT = process.env.VIZDESK_BIG_SLOT ?? "data";
const BIG_NAME = process.env.VIZDESK_BIG_FILE_NAME ?? "big.bin";
const BIG_MB = Number(process.env.VIZDESK_BIG_MB ?? 200);
const CFG_T = process.env.VIZDESK_CONFIG_TEMPLATE ?? "python-config";
const CFG_SLOT = process.env.VIZDESK_CONFIG_SLOT ?? "config";
const CFG_BODY = process.env.VIZDESK_CONFIG_BODY ?? JSON.stringify({ n: 100 });
const CANCEL_T = process.env.VIZDESK_CANCEL_TEMPLATE ?? "python-script";
const CANCEL_PARAMS = JSON.parse(process.env.VIZDESK_CANCEL_PARAMS ?? '{"sleep_seconds": "120"}');
const UPLOAD_KBPS = Number(process.env.VIZDESK_UPLOAD_KBPS ?? 20000);
const TIMEOUT_MS = Number(process.env.VIZDESK_TIMEOUT_S ?? 180) * 1000;

if (!BASE || !TOKEN) {
  console.error("VIZDESK_URL and VIZDESK_TOKEN are required");
  process.exit(2);
}

const summary = { target: BASE, standin: STANDIN, steps: [], timings_ms: {}, screenshots: [], axe: {}, problems: [] };
const log = (msg) => {
  summary.steps.push(msg);
  console.log(`[batch-e2e] ${msg}`);
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
const work = mkdtempSync(join(tmpdir(), "vizdesk-batch-"));
const profile = join(work, "profile");
const axeSource = readFileSync(resolve("node_modules/axe-core/axe.min.js"), "utf8");

function makeFile(name, mb) {
  const path = join(work, name);
  const fd = openSync(path, "w");
  const block = Buffer.alloc(1 << 20);
  for (let i = 0; i < mb; i++) {
    for (let j = 0; j < block.length; j += 4) block.writeUInt32LE((i * 262144 + j / 4) >>> 0, j);
    writeSync(fd, block);
  }
  closeSync(fd);
  return path;
}
function textFile(name, text) {
  const path = join(work, name);
  writeFileSync(path, text);
  return path;
}

async function api(path, token = TOKEN, init = {}) {
  const resp = await fetch(`${BASE}${path}`, { ...init, headers: { Authorization: `Bearer ${token}`, ...(init.headers ?? {}) } });
  return resp;
}

const context = await chromium.launchPersistentContext(profile, {
  executablePath: CHROMIUM,
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  viewport: { width: 1280, height: 900 },
  acceptDownloads: true,
});

let page;
try {
  page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(30000);
  const origin = new URL(BASE).origin;
  const foreign = [];
  const consoleErrors = [];
  const tusRequests = []; // {method, url, offset, at}
  const sockets = [];
  page.on("request", (req) => {
    const url = req.url();
    if (url.startsWith("data:") || url.startsWith("blob:")) return;
    if (new URL(url).origin !== origin) foreign.push(url);
    if (url.includes("/api/v1/uploads") && ["POST", "PATCH", "HEAD", "DELETE"].includes(req.method())) {
      tusRequests.push({ method: req.method(), url, offset: Number(req.headers()["upload-offset"] ?? NaN), at: performance.now() });
    }
  });
  page.on("websocket", (ws) => sockets.push({ url: ws.url(), at: performance.now() }));
  page.on("console", (m) => m.type() === "error" && consoleErrors.push(m.text()));
  page.on("pageerror", (e) => consoleErrors.push(`pageerror: ${e.message}`));
  const csp = [];
  await page.exposeFunction("__cspViolation", (v) => csp.push(v));
  await page.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (e) => window.__cspViolation(`${e.violatedDirective} ${e.blockedURI}`));
    window.__jobStates = [];
    new MutationObserver(() => {
      const v = document.getElementById("job-view");
      const st = v?.dataset.state;
      const last = window.__jobStates[window.__jobStates.length - 1];
      if (st && (!last || last.state !== st || last.id !== v.dataset.jobId)) window.__jobStates.push({ id: v.dataset.jobId, state: st, at: performance.now() });
    }).observe(document, { subtree: true, attributes: true, attributeFilter: ["data-state"] });
  });

  async function shot(name) {
    const path = join(OUT, `${name}.png`);
    await page.screenshot({ path, fullPage: true });
    summary.screenshots.push(path);
  }
  async function axe(name) {
    // injected through the DevTools protocol (the page's CSP refuses inline scripts, as it must)
    if (!(await page.evaluate(() => typeof window.axe !== "undefined"))) await page.evaluate(axeSource);
    const res = await page.evaluate(async () => {
      const r = await window.axe.run(document, { resultTypes: ["violations"] });
      return r.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.length, help: v.help, targets: v.nodes.slice(0, 3).map((n) => n.target.join(" ")) }));
    });
    summary.axe[name] = res;
    const bad = res.filter((v) => v.impact === "serious" || v.impact === "critical");
    check(!bad.length, `axe on ${name}: ${JSON.stringify(bad)}`);
    log(`axe ${name}: ${res.length} violation(s), none serious/critical`);
  }
  const visible = (sel) => page.locator(sel).waitFor({ state: "visible" });
  async function jobCount() {
    const r = await api("/api/v1/jobs");
    return (await r.json()).jobs.length;
  }

  // --- 1. sign-in page: axe ------------------------------------------------------------
  await page.goto(`${BASE}/`);
  await visible("#signin-view");
  await axe("signin");
  await shot("b01-signin");

  // --- 2. sign in, time to interactive, desktop list -----------------------------------
  const t0 = performance.now();
  await page.goto(`${BASE}/#token=${encodeURIComponent(TOKEN)}`);
  await visible("#portal-view");
  const interactive = await page.evaluate(() => performance.getEntriesByName("vizdesk:interactive")[0]?.startTime ?? null);
  summary.timings_ms.load_to_interactive = interactive !== null ? Math.round(interactive) : Math.round(performance.now() - t0);
  log(`load to interactive: ${summary.timings_ms.load_to_interactive} ms`);
  await axe("desktops");

  // --- 3. template library --------------------------------------------------------------
  await page.click("#nav-templates");
  await visible("#library-view");
  await page.locator(`[data-ref="${CFG_T}"]`).waitFor();
  const nTemplates = await page.locator("#template-list > li").count();
  await page.fill("#library-q", "zzzz-no-such-template");
  await visible("#library-empty");
  await page.fill("#library-q", "");
  check((await page.locator("#template-list > li").count()) === nTemplates, "clearing the search shows all templates again");
  const adminEditHidden = await page.locator(`[data-ref="${CFG_T}"] [data-part="edit"]`).isHidden();
  check(adminEditHidden, "admin template offers no edit");
  await shot("b02-library");
  await axe("library");
  log(`library: ${nTemplates} templates, search filters, admin templates read-only`);

  // --- 4. big upload, reload half way, resume from the offset ----------------------------
  const bigPath = makeFile(BIG_NAME, BIG_MB);
  const cdp = await context.newCDPSession(page);
  const throttle = async (kbps) => {
    await cdp.send("Network.enable");
    await cdp.send("Network.emulateNetworkConditions", { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: kbps > 0 ? kbps * 1024 : -1 });
  };
  await page.goto(`${BASE}/#/new/${encodeURIComponent(BIG_T)}`);
  await visible("#jobform-view");
  await page.locator(`[data-slot="${BIG_SLOT}"]`).waitFor();
  await axe("jobform");
  await throttle(UPLOAD_KBPS);
  const bigInput = page.locator(`[data-slot="${BIG_SLOT}"] input[type=file]`);
  await bigInput.setInputFiles(bigPath);
  const size = BIG_MB * 1048576;
  await expectSoon(
    page.waitForFunction((half) => window.vizdesk.uploads.some((u) => u.offset >= half && u.state === "uploading"), size * 0.4, { timeout: TIMEOUT_MS, polling: 100 }),
    "the big upload passes 40 %",
  );
  const before = await page.evaluate(() => window.vizdesk.uploads[0]);
  await shot("b03-upload-progress");
  log(`big upload at ${before.offset} of ${size} bytes: reloading the page`);
  const createdBefore = tusRequests.filter((r) => r.method === "POST").length;
  const mark = tusRequests.length;
  await page.reload();
  await visible("#jobform-view");
  await page.locator(`[data-slot="${BIG_SLOT}"] [data-part="pending"]`).waitFor({ state: "visible" });
  await page.locator(`[data-slot="${BIG_SLOT}"] input[type=file]`).setInputFiles(bigPath);
  await expectSoon(
    page.waitForFunction(() => window.vizdesk.uploads.some((u) => u.state === "done"), null, { timeout: TIMEOUT_MS, polling: 200 }),
    "the resumed upload finishes",
  );
  await throttle(0);
  const after = await page.evaluate(() => window.vizdesk.uploads.find((u) => u.state === "done"));
  const patchesAfter = tusRequests.slice(mark).filter((r) => r.method === "PATCH");
  const postsAfter = tusRequests.slice(mark).filter((r) => r.method === "POST").length;
  check(postsAfter === 0, `no new upload was created after the reload (${postsAfter} POSTs)`);
  check(patchesAfter.length > 0 && patchesAfter[0].offset > 0, `the first PATCH after the reload starts at ${patchesAfter[0]?.offset}, not 0`);
  check(after.resumedFrom > 0 && after.resumedFrom <= size, `the page records the resume offset (${after.resumedFrom})`);
  summary.upload = { size, offset_at_reload: before.offset, resumed_from: patchesAfter[0].offset, creations_before_reload: createdBefore, upload_id: after.uploadId };
  await shot("b04-upload-resumed");
  log(`upload resumed at ${patchesAfter[0].offset} bytes after the reload (was at ${before.offset}), finished`);
  const bigUploadId = after.uploadId;

  // --- 5. refused files: wrong pattern, too big, schema error; nothing submitted -----------
  const jobsBefore = await jobCount();
  await page.goto(`${BASE}/#/new/${encodeURIComponent(CFG_T)}`);
  await visible("#jobform-view");
  const cfgSlot = page.locator(`[data-slot="${CFG_SLOT}"]`);
  await cfgSlot.waitFor();
  const slotError = cfgSlot.locator(':scope > [data-part="error"]');
  await cfgSlot.locator("input[type=file]").setInputFiles(textFile("config.txt", "{}"));
  await expectSoon(slotError.filter({ hasText: /does not match/ }).waitFor(), "wrong pattern shown next to the slot");
  await shot("b05-refused-pattern");
  await cfgSlot.locator("input[type=file]").setInputFiles(textFile("huge.json", `{"n": 1, "pad": "${"x".repeat(70000)}"}`));
  await expectSoon(slotError.filter({ hasText: /this slot takes up to/ }).waitFor(), "too big shown next to the slot");
  await shot("b06-refused-size");
  await cfgSlot.locator("input[type=file]").setInputFiles(textFile("bad.json", JSON.stringify({ n: "many" })));
  await expectSoon(page.waitForFunction(() => window.vizdesk.uploads.some((u) => u.name === "bad.json" && u.state === "done")), "the schema-invalid file uploads");
  await page.click("#preview-button");
  await expectSoon(slotError.filter({ hasText: /\$\.n|n/ }).waitFor({ state: "visible" }), "schema error shown next to the slot");
  const schemaText = await slotError.innerText();
  check(/\$\.n/.test(schemaText) || /integer|many/.test(schemaText), `schema error names the JSON path: ${schemaText}`);
  check(await page.locator("#preview-panel").isHidden(), "no preview for a refused file");
  await shot("b07-refused-schema");
  check((await jobCount()) === jobsBefore, "nothing was submitted");
  log(`refused files shown next to the slot (pattern, size, schema: "${schemaText}"); nothing submitted`);

  // --- 6. a good config: preview, submit, live states, output, results ---------------------
  await cfgSlot.locator("input[type=file]").setInputFiles(textFile("case.json", CFG_BODY));
  await expectSoon(page.waitForFunction(() => window.vizdesk.uploads.some((u) => u.name === "case.json" && u.state === "done")), "config uploads");
  await page.click("#preview-button");
  await expectSoon(visible("#preview-panel"), "preview shown");
  const options = await page.locator("#preview-options").innerText();
  check(/--/.test(options), `preview lists sbatch options: ${options}`);
  check((await page.locator("#preview-script").innerText()).length > 0, "preview shows the script");
  await shot("b08-preview");
  log(`preview: ${options.split("\n").length} sbatch options, estimate: ${await page.locator("#preview-estimate").innerText()}`);
  const navigations = [];
  page.on("framenavigated", (f) => f === page.mainFrame() && navigations.push(f.url()));
  await page.click("#submit-button");
  await expectSoon(visible("#job-view"), "job page opens");
  const jobId = await page.locator("#job-view").getAttribute("data-job-id");
  await axe("job");
  await expectSoon(page.waitForFunction(() => ["COMPLETED", "FAILED"].includes(document.getElementById("job-view").dataset.state), null, { timeout: TIMEOUT_MS }), "the job finishes");
  const states = await page.evaluate((id) => window.__jobStates.filter((s) => s.id === id).map((s) => s.state), jobId);
  check(states.includes("RUNNING") || states.includes("QUEUED"), `states seen live: ${states}`);
  check(states[states.length - 1] === "COMPLETED", `the job completed: ${states}`);
  check(!navigations.some((u) => !u.includes("#/jobs/")), `no reload while watching: ${navigations}`);
  summary.job = { id: jobId, states };
  log(`job ${jobId}: states ${states.join(" → ")} without reloading`);
  // the page fetches the tail after it shows the final state: wait for that request
  await expectSoon(page.waitForFunction(() => document.getElementById("job-output").textContent.trim().length > 0, null, { timeout: 15000 }), "the output tail is shown");
  await expectSoon(page.locator("#results-rows tr").first().waitFor(), "result files listed");
  await shot("b09-job-done");
  // one result file: the page's download vs the API's bytes
  const firstRow = page.locator('#results-rows tr:has(.badge)').first();
  const path = await firstRow.getAttribute("data-path");
  const [dl] = await Promise.all([page.waitForEvent("download"), firstRow.locator("button").click()]);
  const got = readFileSync(await dl.path());
  const want = Buffer.from(await (await api(`/api/v1/jobs/${jobId}/files/${path.split("/").map(encodeURIComponent).join("/")}`)).arrayBuffer());
  check(got.equals(want) && got.length > 0, `downloaded ${path} equals the API's bytes (${got.length} vs ${want.length})`);
  check(Number(await firstRow.getAttribute("data-size")) === got.length, "the listed size matches the file");
  const [zdl] = await Promise.all([page.waitForEvent("download"), page.click("#results-zip")]);
  const zip = readFileSync(await zdl.path());
  check(zip.subarray(0, 2).toString() === "PK" && zip.includes(Buffer.from(path)), `the zip holds ${path}`);
  summary.downloads = { file: path, bytes: got.length, zip_bytes: zip.length };
  log(`downloaded ${path} (${got.length} bytes, same as the API) and the zip (${zip.length} bytes)`);

  // submit again: the form comes back with the same template
  await page.click("#job-again");
  await expectSoon(visible("#jobform-view"), "submit again opens the form");
  check((await page.locator("#jobform-title").innerText()).length > 0, "prefilled form");
  log(`submit again: ${await page.locator("#jobform-status").innerText()}`);

  // --- 7. a second job, cancelled ------------------------------------------------------------
  await page.goto(`${BASE}/#/new/${encodeURIComponent(CANCEL_T)}`);
  await visible("#jobform-view");
  for (const [name, value] of Object.entries(CANCEL_PARAMS)) await page.fill(`#job-form [data-name="${name}"]`, String(value));
  const bigSlotHere = await page.locator(`[data-slot="${BIG_SLOT}"]`).count();
  void bigSlotHere;
  await page.click("#preview-button");
  await expectSoon(visible("#preview-panel"), "preview of the second job");
  await page.click("#submit-button");
  await expectSoon(visible("#job-view"), "second job page");
  const job2 = await page.locator("#job-view").getAttribute("data-job-id");
  await page.click("#job-cancel");
  await page.click("#job-cancel");
  await expectSoon(page.waitForFunction(() => document.getElementById("job-view").dataset.state === "CANCELLED", null, { timeout: 60000 }), "the second job is cancelled");
  await shot("b10-cancelled");
  await page.click("#nav-jobs");
  await visible("#jobs-view");
  await page.locator(`#job-rows [data-job-id="${job2}"][data-state="CANCELLED"]`).waitFor();
  await axe("jobs");
  await shot("b11-job-list");
  log(`second job ${job2} cancelled; job list shows it`);
  void bigUploadId;

  // --- 8. token renewal with a desktop and an upload open ------------------------------------
  if (SHORT || SHORT_URL) {
    const short = await shortToken();
    await page.goto(`${BASE}/`);
    await page.evaluate(() => sessionStorage.clear());
    await page.goto("about:blank");
    await page.goto(`${BASE}/#token=${encodeURIComponent(short)}&/new/${encodeURIComponent(BIG_T)}`);
    await visible("#jobform-view");
    await throttle(Number(process.env.VIZDESK_RENEW_UPLOAD_KBPS ?? 2000));
    const smallBig = makeFile("renew.bin", Number(process.env.VIZDESK_RENEW_MB ?? 120));
    await page.locator(`[data-slot="${BIG_SLOT}"] input[type=file]`).setInputFiles(smallBig);
    await page.waitForFunction(() => window.vizdesk.uploads.some((u) => u.name === "renew.bin" && u.offset > 0));
    const uploadsMark = tusRequests.length;
    await page.click("#nav-desktops");
    await visible("#portal-view");
    await page.click("#launch-button");
    await expectSoon(visible("#desktop-view"), "the desktop opens");
    await page.waitForFunction(() => window.vizdesk.connected, null, { timeout: TIMEOUT_MS });
    const attempt = await page.evaluate(() => window.vizdesk.desktopAttempt);
    const wsCount = sockets.length;
    await expectSoon(page.waitForFunction(() => window.vizdesk.tokenExpired, null, { timeout: TIMEOUT_MS, polling: 500 }), "the short token expires");
    await visible("#token-banner");
    await shot("b12-token-expired");
    const mid = await page.evaluate(() => window.vizdesk.uploads.find((u) => u.name === "renew.bin"));
    await page.fill("#renew-input", RENEW);
    await page.click("#renew-button");
    await expectSoon(page.locator("#token-banner").waitFor({ state: "hidden" }), "renewal accepted");
    await throttle(0);
    await expectSoon(page.waitForFunction(() => window.vizdesk.uploads.some((u) => u.name === "renew.bin" && u.state === "done"), null, { timeout: TIMEOUT_MS }), "the upload finishes after the renewal");
    const stillConnected = await page.evaluate(() => window.vizdesk.connected);
    const attemptAfter = await page.evaluate(() => window.vizdesk.desktopAttempt);
    const posts = tusRequests.slice(uploadsMark).filter((r) => r.method === "POST").length;
    const offsets = tusRequests.slice(uploadsMark).filter((r) => r.method === "PATCH").map((r) => r.offset);
    check(stillConnected && attemptAfter === attempt && sockets.length === wsCount, `the desktop websocket stayed open (connected ${stillConnected}, attempts ${attempt}→${attemptAfter}, sockets ${wsCount}→${sockets.length})`);
    check(posts === 0 && offsets.every((o, i) => i === 0 || o >= offsets[i - 1]) && !offsets.slice(1).includes(0), `the upload was not restarted (POSTs ${posts}, offsets ${offsets.slice(0, 5)}…)`);
    summary.renewal = { upload_state_at_expiry: mid.state, upload_offset_at_expiry: mid.offset, patches: offsets.length, websockets: sockets.length - wsCount };
    await shot("b13-renewed");
    log(`token renewed in place: desktop still connected (no new websocket), upload went on from ${mid.offset} (state at expiry: ${mid.state}) to the end`);
    await page.click("#desktop-stop");
    await page.click("#desktop-stop");
  } else {
    log("renewal step skipped (no VIZDESK_SHORT_TOKEN or VIZDESK_SHORT_TOKEN_URL)");
  }

  check(!foreign.length, `third-party requests: ${foreign}`);
  check(!csp.length, `CSP violations: ${csp}`);
  summary.problems.push(...consoleErrors.map((e) => `console: ${e}`));
  summary.ok = true;
} catch (exc) {
  summary.ok = false;
  summary.error = String(exc?.stack ?? exc);
  console.error(summary.error);
  try {
    await page?.screenshot({ path: join(OUT, "failure.png"), fullPage: true });
    summary.screenshots.push(join(OUT, "failure.png"));
  } catch {
    /* ignore */
  }
} finally {
  writeFileSync(join(OUT, "summary.json"), JSON.stringify(summary, null, 2));
  console.log(JSON.stringify({ ok: summary.ok, timings_ms: summary.timings_ms, upload: summary.upload, renewal: summary.renewal }));
  await context.close();
  rmSync(work, { recursive: true, force: true });
}
process.exit(summary.ok ? 0 : 1);
