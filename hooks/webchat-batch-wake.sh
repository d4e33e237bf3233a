#!/bin/sh
# webchat-batch-wake.sh: wake one model turn per inbound message.
#
# Point the daemon at it; with --reply the runner's answer goes back to the sender:
#
#   WEBCHAT_RUNNER=claude gts-webchat daemon start --task support --as my-agent \
#       --reply --on-message /path/to/hooks/webchat-batch-wake.sh
#
# (`gts-webchat daemon start … --reply --runner claude` does the same without this script.)
#
# The work is done by `gts-webchat run-host`, in Rust: it builds the prompt (the new message or,
# with --on-busy coalesce, every message that arrived while the runner was busy, plus the
# conversation so far, the agent's own replies included, from the relay), fences everything a
# sender wrote as untrusted data between per-run random delimiters, runs the host for one
# non-interactive turn in a working directory of the task's own, continues the host's session by
# the id it printed on the first turn, and prints only the final answer. A host that fails (or
# reports an error while exiting 0) prints its reason on stderr and sends nothing; the daemon
# retries, then dead-letters with that reason.
#
# WEBCHAT_RUNNER        codex, claude, gemini, qwen, opencode, copilot, aider, cursor, goose, or
#                       the path of any program that reads the prompt on stdin and prints the answer
# WEBCHAT_WORKDIR       where the host works (default: the task's own folder under its state dir)
# WEBCHAT_HISTORY       earlier messages in the prompt (default 20)
# WEBCHAT_PROMPT_BYTES  the prompt's budget; the oldest history goes first (default 100000)
# WEBCHAT_RESUME        1 (default): continue the task's host session; 0: a fresh one every turn
# WEBCHAT_RUNNER_FLAGS  extra flags for the host, written like a command line, for example
#                       "--permission-mode acceptEdits" for claude. Never put message text here.
#
# Safety: hosts act on text that strangers can send. The presets use each host's sandboxed or
# approval-bounded mode where it has one (codex workspace-write sandbox, opencode and gemini
# refuse unapproved tools headless); flags that approve everything (codex --yolo, claude
# --dangerously-skip-permissions, aider --yes-always, gemini --approval-mode yolo, opencode
# --auto, copilot --allow-all-tools, GOOSE_MODE=auto) let any chat message run commands: use them
# only in a container or a throwaway checkout. See HOSTS.md for each host's flags.
#
# Message text is never spliced into a command: the records reach run-host on stdin, unchanged.
set -eu

runner=${WEBCHAT_RUNNER:-}
bin=${GTS_WEBCHAT_BIN:-gts-webchat}
case "$runner" in
"")
    echo "webchat-batch-wake: set WEBCHAT_RUNNER (codex, claude, gemini, qwen, opencode, copilot, aider, cursor, goose, or a program path)" >&2
    exit 2 ;;
codex | claude | gemini | qwen | opencode | copilot | aider | cursor | goose)
    exec "$bin" run-host "$runner" ;;
*)
    if [ ! -x "$runner" ]; then
        echo "webchat-batch-wake: WEBCHAT_RUNNER=$runner is neither a known host nor an executable" >&2
        exit 2
    fi
    exec "$bin" run-host text --program "$runner" ;;
esac
