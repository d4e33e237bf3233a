#!/usr/bin/env bash
# The test command: every test, including the web app in headless Chromium and the real AI
# host CLIs. Needs Debian's chromium (/usr/bin/chromium, or set CHROMIUM), node/npm and
# python3; the browser driver (playwright-core, from tests/web/package-lock.json) and
# schemathesis (into tests/.venv, from tests/schema/requirements.txt) are installed here when
# missing, and the host CLIs (npm and PyPI, pinned in tests/hosts/) by tests/hosts/install.sh
# into ~/.cache/gts-webchat/hosts, once. Set GTSW_HOSTS_BIN to use host CLIs of your own.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d tests/web/node_modules/playwright-core ]; then
    npm ci --prefix tests/web --no-audit --no-fund
fi
if [ ! -x tests/.venv/bin/schemathesis ]; then
    python3 -m venv tests/.venv
    tests/.venv/bin/pip install --quiet --disable-pip-version-check -r tests/schema/requirements.txt
fi
if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
    echo "tests/run.sh: no Chromium at ${CHROMIUM:-/usr/bin/chromium}; install it (sudo apt-get install chromium) or set CHROMIUM" >&2
    exit 2
fi
if [ -z "${GTSW_HOSTS_BIN:-}" ]; then
    GTSW_HOSTS_BIN=$(tests/hosts/install.sh)
    export GTSW_HOSTS_BIN
fi
exec cargo test --locked "$@"
