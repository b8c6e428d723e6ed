#!/usr/bin/env bash
# The dashboard's browser test: installs what it needs (Debian's chromium and chromium-driver,
# playwright-core into tests/browser/node_modules), builds embtune unless EMBTUNE_BIN names a
# binary, and runs dashboard.mjs. Screenshots go to $EMBTUNE_ARTIFACTS (default
# target/ci-artifacts/).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
chromium="${CHROMIUM:-/usr/bin/chromium}"

if [ ! -x "$chromium" ] || ! command -v chromedriver >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing chromium and chromium-driver"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
    else
        echo "chromium is missing: install Debian's chromium and chromium-driver (or set CHROMIUM)" >&2
        exit 1
    fi
fi
"$chromium" --version

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "node and npm are missing: the browser test needs Node.js 20 or newer" >&2
    exit 1
fi
if [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
    echo "node $(node --version) is too old: playwright-core needs Node.js 20 or newer" >&2
    exit 1
fi

cd "$here"
if [ ! -d node_modules/playwright-core ]; then
    # Only the library: playwright-core downloads no browser; it drives Debian's chromium.
    if [ -f package-lock.json ]; then
        npm ci --no-audit --no-fund
    else
        npm install --no-audit --no-fund
    fi
fi

if [ -z "${EMBTUNE_BIN:-}" ]; then
    (cd "$root" && cargo build -p embtune)
    export EMBTUNE_BIN="$root/target/debug/embtune"
fi
export EMBTUNE_ARTIFACTS="${EMBTUNE_ARTIFACTS:-$root/target/ci-artifacts}"
exec node "$here/dashboard.mjs"
