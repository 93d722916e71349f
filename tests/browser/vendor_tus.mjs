// Copies the pinned tus-js-client npm package's browser bundle (dist/tus.min.js: a UMD
// script that defines window.tus; no eval, no network of its own) plus its license and the
// licenses of the packages bundled into it, into daemon/vizdesk/static/vendor/tus-js-client/,
// so the daemon serves it without npm at run time. Run after `npm ci`: `npm run vendor:tus`.
// With --check it only verifies that the committed copy equals the installed package.
import { createHash } from "node:crypto";
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const nm = join(root, "node_modules");
const src = join(nm, "tus-js-client");
const dst = join(root, "daemon", "vizdesk", "static", "vendor", "tus-js-client");
const pinned = JSON.parse(readFileSync(join(root, "package.json"), "utf8")).devDependencies["tus-js-client"];

if (!existsSync(join(src, "package.json"))) {
  console.error(`missing ${src}: run \`npm ci\` first`);
  process.exit(2);
}
const installed = JSON.parse(readFileSync(join(src, "package.json"), "utf8")).version;
if (installed !== pinned) {
  console.error(`installed tus-js-client ${installed} differs from the pinned ${pinned}: run \`npm ci\``);
  process.exit(2);
}

// [source under node_modules, destination under vendor/tus-js-client]
const BUNDLED = [
  ["js-base64", "LICENSE.md", "BSD-3-Clause"],
  ["url-parse", "LICENSE", "MIT"],
  ["querystringify", "LICENSE", "MIT"],
  ["requires-port", "LICENSE", "MIT"],
  ["lodash.throttle", "LICENSE", "MIT"],
];
const pairs = [
  [join("tus-js-client", "dist", "tus.min.js"), "tus.min.js"],
  [join("tus-js-client", "LICENSE"), "LICENSE"],
  ...BUNDLED.map(([pkg, file]) => [join(pkg, file), join("licenses", `${pkg}-${file}`)]),
];

function digest() {
  const h = createHash("sha256");
  for (const [from] of pairs) h.update(from).update(readFileSync(join(nm, from)));
  return h.digest("hex");
}

if (process.argv.includes("--check")) {
  const problems = [];
  for (const [from, to] of pairs) {
    const target = join(dst, to);
    if (!existsSync(target)) problems.push(`missing ${to}`);
    else if (!readFileSync(target).equals(readFileSync(join(nm, from)))) problems.push(`differs ${to}`);
  }
  const version = existsSync(join(dst, "VERSION")) ? readFileSync(join(dst, "VERSION"), "utf8").trim() : "";
  if (version !== pinned) problems.push(`VERSION is '${version}', pinned is '${pinned}'`);
  if (problems.length) {
    console.error(problems.join("\n"));
    process.exit(1);
  }
  console.log(`vendored tus-js-client ${pinned} matches node_modules (${pairs.length} files)`);
  process.exit(0);
}

rmSync(dst, { recursive: true, force: true });
mkdirSync(join(dst, "licenses"), { recursive: true });
for (const [from, to] of pairs) cpSync(join(nm, from), join(dst, to));
const versions = BUNDLED.map(
  ([pkg, , lic]) => `${pkg}@${JSON.parse(readFileSync(join(nm, pkg, "package.json"), "utf8")).version} (${lic})`,
);
writeFileSync(join(dst, "VERSION"), `${pinned}\n`);
writeFileSync(
  join(dst, "README.vizdesk"),
  [
    `tus-js-client ${pinned}, copied unmodified from the npm package tus-js-client@${pinned}`,
    "(its browser bundle dist/tus.min.js, a UMD script that sets window.tus; loaded with a",
    "plain <script src> so it works under the page's CSP without a bundler).",
    "tus-js-client is licensed under MIT (LICENSE). The bundle also contains, per its build (license files taken from the versions npm installs with it):",
    `${versions.join(", ")} — their license files are under licenses/;`,
    "and browserify's buffer, base64-js and ieee754 (MIT / BSD-3-Clause).",
    "Regenerate with `npm ci && npm run vendor:tus` after changing the pin in package.json.",
    `sha256 of the copied files: ${digest()}`,
    "",
  ].join("\n"),
);
console.log(`copied tus-js-client ${pinned}: ${pairs.length} files into ${relative(root, dst)}`);
