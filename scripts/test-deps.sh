#!/usr/bin/env bash
# Test-only dependencies beyond the test bed: Debian's Chromium (+ xclip) for the browser
# tests and the pinned node packages (playwright-core drives that Chromium; it downloads
# no browser). Idempotent and quick when everything is present.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for pkg in chromium xclip nodejs npm; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
# node/npm may come from elsewhere than Debian (e.g. a preinstalled toolchain): keep those.
if command -v node >/dev/null && command -v npm >/dev/null; then
  tmp=(); for p in "${need[@]}"; do [[ $p == nodejs || $p == npm ]] || tmp+=("$p"); done
  need=("${tmp[@]}")
fi
if ((${#need[@]})); then
  echo "test-deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=900 update -qq
  apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "test-deps: npm ci"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
fi
