// Copies the pinned @novnc/novnc npm package (its ES module trees `core/` and `vendor/`
// plus license files) into daemon/vizdesk/static/vendor/novnc/, so the daemon serves
// noVNC without npm at run time. Run after `npm ci`: `npm run vendor:novnc`.
// With --check it only verifies that the committed copy equals the installed package.
import { createHash } from "node:crypto";
import { cpSync, existsSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const src = join(root, "node_modules", "@novnc", "novnc");
const dst = join(root, "daemon", "vizdesk", "static", "vendor", "novnc");
const pinned = JSON.parse(readFileSync(join(root, "package.json"), "utf8")).devDependencies["@novnc/novnc"];

if (!existsSync(join(src, "package.json"))) {
  console.error(`missing ${src}: run \`npm ci\` first`);
  process.exit(2);
}
const installed = JSON.parse(readFileSync(join(src, "package.json"), "utf8")).version;
if (installed !== pinned) {
  console.error(`installed @novnc/novnc ${installed} differs from the pinned ${pinned}: run \`npm ci\``);
  process.exit(2);
}

const TREES = ["core", "vendor"];
const FILES = [
  ["LICENSE.txt", "LICENSE.txt"],
  ["AUTHORS", "AUTHORS"],
  ...readdirSync(join(src, "docs"))
    .filter((name) => name.startsWith("LICENSE"))
    .map((name) => [join("docs", name), join("licenses", name)]),
];

function walk(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...walk(p));
    else out.push(p);
  }
  return out;
}

function digestTree(base, pairs) {
  const h = createHash("sha256");
  for (const [from] of pairs) h.update(from).update(readFileSync(join(base, from)));
  return h.digest("hex");
}

const pairs = [];
for (const tree of TREES) {
  for (const file of walk(join(src, tree))) {
    const rel = relative(src, file);
    pairs.push([rel, rel]);
  }
}
pairs.push(...FILES);
pairs.sort((a, b) => (a[1] < b[1] ? -1 : 1));

if (process.argv.includes("--check")) {
  const problems = [];
  for (const [from, to] of pairs) {
    const target = join(dst, to);
    if (!existsSync(target)) problems.push(`missing ${to}`);
    else if (!readFileSync(target).equals(readFileSync(join(src, from)))) problems.push(`differs ${to}`);
  }
  const version = existsSync(join(dst, "VERSION")) ? readFileSync(join(dst, "VERSION"), "utf8").trim() : "";
  if (version !== pinned) problems.push(`VERSION is '${version}', pinned is '${pinned}'`);
  if (problems.length) {
    console.error(problems.join("\n"));
    process.exit(1);
  }
  console.log(`vendored noVNC ${pinned} matches node_modules (${pairs.length} files)`);
  process.exit(0);
}

rmSync(dst, { recursive: true, force: true });
for (const [from, to] of pairs) cpSync(join(src, from), join(dst, to));
writeFileSync(join(dst, "VERSION"), `${pinned}\n`);
writeFileSync(
  join(dst, "README.vizdesk"),
  [
    `noVNC ${pinned}, copied unmodified from the npm package @novnc/novnc@${pinned}`,
    "(its `core/` and `vendor/` ES module trees; license files under licenses/).",
    "noVNC is licensed under MPL-2.0 (see LICENSE.txt); pako under MIT (vendor/pako/LICENSE).",
    "Regenerate with `npm ci && npm run vendor:novnc` after changing the pin in package.json.",
    `sha256 of the copied files: ${digestTree(src, pairs)}`,
    "",
  ].join("\n"),
);
console.log(`copied noVNC ${pinned}: ${pairs.length} files into ${relative(root, dst)}`);
