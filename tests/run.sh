#!/usr/bin/env bash
# The test command: every test, including the web app in headless Chromium.
# Needs Debian's chromium (/usr/bin/chromium, or set CHROMIUM) and node/npm; the browser
# driver (playwright-core) is installed here from tests/web/package-lock.json when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d tests/web/node_modules/playwright-core ]; then
    npm ci --prefix tests/web --no-audit --no-fund
fi
if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
    echo "tests/run.sh: no Chromium at ${CHROMIUM:-/usr/bin/chromium}; install it (sudo apt-get install chromium) or set CHROMIUM" >&2
    exit 2
fi
exec cargo test --locked "$@"
