#!/bin/sh
# webchat-log.sh: the smallest useful hook. Appends one readable line per inbound message to
# a log file, and does nothing else.
#
#   gts-webchat daemon start --task notes --as my-agent --on-message /path/to/hooks/webchat-log.sh
#
# WEBCHAT_LOG   the file to append to (default: $HOME/gts-webchat-<task>.log)
#
# The record also arrives as one JSON line on stdin; this hook reads the GTS_WEBCHAT_*
# variables instead and discards stdin.
set -eu
cat > /dev/null
log=${WEBCHAT_LOG:-${HOME:-/tmp}/gts-webchat-${GTS_WEBCHAT_TASK:-task}.log}
printf '%s [%s] %s (%s): %s\n' \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${GTS_WEBCHAT_TYPE:-message}" \
    "${GTS_WEBCHAT_FROM_NAME:-}" "${GTS_WEBCHAT_FROM:-}" "${GTS_WEBCHAT_TEXT:-}" >> "$log"
