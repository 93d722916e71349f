// Checks of the served static files: CSP-friendly (no inline scripts, styles or event
// handlers), no third-party URLs, every module import resolves to a served file, and the
// vendored noVNC copy matches the pinned npm package.
// Run: node --test tests/js/
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, readdirSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const staticDir = join(root, "daemon", "vizdesk", "static");
const html = readFileSync(join(staticDir, "index.html"), "utf8");

function walk(dir) {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? walk(p) : [p];
  });
}

const ownFiles = walk(staticDir).filter((p) => !p.includes(`${join("static", "vendor")}`));

describe("index.html is CSP-friendly", () => {
  it("has no inline script", () => {
    for (const m of html.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/gi)) {
      assert.match(m[1], /\bsrc="/, "every <script> has a src");
      assert.equal(m[2].trim(), "", "no inline script body");
    }
  });

  it("has no <style> element, style attribute or on* handler", () => {
    assert.doesNotMatch(html, /<style\b/i);
    assert.doesNotMatch(html, /\sstyle=/i);
    assert.doesNotMatch(html, /\son[a-z]+=/i);
    assert.doesNotMatch(html, /javascript:/i);
  });

  it("references only same-origin resources", () => {
    for (const m of html.matchAll(/\b(?:src|href)="([^"]*)"/g)) {
      const url = m[1];
      assert.ok(url.startsWith("/") || url.startsWith("#"), `not same-origin: ${url}`);
      assert.ok(!url.startsWith("//"), `protocol-relative URL: ${url}`);
      if (url.startsWith("/static/")) {
        assert.ok(existsSync(join(staticDir, url.slice("/static/".length))), `missing file for ${url}`);
      }
    }
  });
});

describe("own scripts and styles", () => {
  it("contain no absolute http(s) URLs (no third-party requests)", () => {
    for (const file of ownFiles.filter((p) => /\.(js|css|html|svg)$/.test(p))) {
      const text = readFileSync(file, "utf8").replace(/xmlns="http:\/\/www\.w3\.org\/2000\/svg"/g, "");
      assert.doesNotMatch(text, /https?:\/\//, relative(root, file));
    }
  });

  it("use no eval-like constructs and no innerHTML", () => {
    for (const file of ownFiles.filter((p) => p.endsWith(".js"))) {
      const text = readFileSync(file, "utf8");
      assert.doesNotMatch(text, /\beval\(|new Function\(|\.innerHTML\b|setAttribute\(\s*["']style/, relative(root, file));
    }
  });

  it("import only files that exist (relative ES module imports)", () => {
    const jsFiles = walk(staticDir).filter((p) => p.endsWith(".js"));
    for (const file of jsFiles) {
      const text = readFileSync(file, "utf8");
      for (const m of text.matchAll(/^\s*(?:import|export)\b[^'"]*?from\s*["']([^"']+)["']/gm)) {
        const spec = m[1];
        assert.ok(spec.startsWith("."), `bare import ${spec} in ${relative(root, file)}`);
        assert.ok(existsSync(join(dirname(file), spec)), `${relative(root, file)} imports missing ${spec}`);
      }
    }
  });
});

describe("vendored noVNC", () => {
  const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
  const pin = pkg.devDependencies["@novnc/novnc"];

  it("is pinned to an exact version and VERSION matches it", () => {
    assert.match(pin, /^\d+\.\d+\.\d+$/);
    assert.match(pkg.devDependencies["playwright-core"], /^\d+\.\d+\.\d+$/);
    const version = readFileSync(join(staticDir, "vendor", "novnc", "VERSION"), "utf8").trim();
    assert.equal(version, pin);
    assert.ok(existsSync(join(staticDir, "vendor", "novnc", "LICENSE.txt")));
    assert.ok(existsSync(join(staticDir, "vendor", "novnc", "core", "rfb.js")));
  });

  it("equals the installed npm package byte for byte (when node_modules is present)", (t) => {
    if (!existsSync(join(root, "node_modules", "@novnc", "novnc", "package.json"))) {
      t.skip("node_modules/@novnc/novnc not installed (npm ci)");
      return;
    }
    const r = spawnSync(process.execPath, [join(root, "tests", "browser", "vendor_novnc.mjs"), "--check"], {
      encoding: "utf8",
    });
    assert.equal(r.status, 0, r.stderr + r.stdout);
  });
});

describe("vendored tus-js-client", () => {
  const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
  const pin = pkg.devDependencies["tus-js-client"];
  const dir = join(staticDir, "vendor", "tus-js-client");

  it("is pinned to an exact version, VERSION matches it, licenses are there", () => {
    assert.match(pin, /^\d+\.\d+\.\d+$/);
    assert.match(pkg.devDependencies["axe-core"], /^\d+\.\d+\.\d+$/);
    assert.equal(readFileSync(join(dir, "VERSION"), "utf8").trim(), pin);
    assert.ok(existsSync(join(dir, "LICENSE")));
    assert.ok(existsSync(join(dir, "tus.min.js")));
  });

  it("is loaded by index.html before the page's modules", () => {
    const tusAt = html.indexOf('src="/static/vendor/tus-js-client/tus.min.js"');
    assert.ok(tusAt > 0 && tusAt < html.indexOf('src="/static/app.js"'));
  });

  it("uses no eval and makes no request of its own", () => {
    const text = readFileSync(join(dir, "tus.min.js"), "utf8");
    assert.doesNotMatch(text, /\beval\(|new Function\(/);
  });

  it("equals the installed npm package byte for byte (when node_modules is present)", (t) => {
    if (!existsSync(join(root, "node_modules", "tus-js-client", "package.json"))) {
      t.skip("node_modules/tus-js-client not installed (npm ci)");
      return;
    }
    const r = spawnSync(process.execPath, [join(root, "tests", "browser", "vendor_tus.mjs"), "--check"], {
      encoding: "utf8",
    });
    assert.equal(r.status, 0, r.stderr + r.stdout);
  });
});
