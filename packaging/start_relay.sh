#!/bin/sh
# Starts the private relay from this directory with relay/.env.local. WEBCHAT_RELAY_PORT
# overrides the port (0 picks a free one); the relay prints the address it listens on.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
if [ ! -f "$here/relay/.env.local" ]; then
    echo "start_relay.sh: no relay/.env.local; copy relay/.env.example to relay/.env.local and edit it" >&2
    exit 2
fi
set -- relay --env-file "$here/relay/.env.local" --data-dir "${DATA_DIR:-$here/data}"
if [ -n "${WEBCHAT_RELAY_PORT:-}" ]; then
    set -- "$@" --port "$WEBCHAT_RELAY_PORT"
fi
exec "$here/bin/gts-webchat" "$@"
