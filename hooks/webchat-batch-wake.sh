#!/bin/sh
# webchat-batch-wake.sh: wake one model turn per inbound message.
#
# Point the daemon at it; with --reply the runner's answer goes back to the sender:
#
#   WEBCHAT_RUNNER=claude gts-webchat daemon start --task support --as my-agent \
#       --reply --on-message /path/to/hooks/webchat-batch-wake.sh
#
# It builds a prompt from the newest message (or, with --on-busy coalesce, every message that
# arrived while the runner was busy) plus recent history from the task's inbox.jsonl, runs the
# runner named in WEBCHAT_RUNNER for one non-interactive turn, and prints only the runner's
# final answer on stdout (that is what --reply sends; an empty answer sends nothing).
#
# WEBCHAT_RUNNER     one of: codex claude aider gemini opencode goose cursor, or the path of
#                    any executable that reads the prompt on stdin and prints the answer.
# WEBCHAT_WORKDIR    where the runner works (default: $HOME). The daemon itself runs in /.
# WEBCHAT_HISTORY    how many earlier inbox records go into the prompt (default 20).
# WEBCHAT_RESUME     1 (default): continue the runner's previous session after the first
#                    turn; 0: a fresh session every time (the history is in the prompt anyway).
# WEBCHAT_RUNNER_FLAGS  extra flags for the preset, split on spaces (for example
#                    "--permission-mode acceptEdits" for claude). Never put message text here.
#
# Safety: these runners act on text that strangers can send. The presets below use each
# host's sandboxed or approval-bounded mode where it has one; flags that approve everything
# (codex --yolo, claude --dangerously-skip-permissions, aider --yes-always, gemini --approval-mode
# yolo, opencode --auto, GOOSE_MODE=auto) let any chat message run commands: use them only in a
# container or a throwaway checkout. See HOSTS.md for each host's flags.
#
# Message text is never spliced into a command string: it reaches the runner as one argument
# ("$prompt") or on stdin, and nothing here is eval'd.
set -eu

runner=${WEBCHAT_RUNNER:-}
if [ -z "$runner" ]; then
    echo "webchat-batch-wake: set WEBCHAT_RUNNER (codex, claude, aider, gemini, opencode, goose, cursor, or a program path)" >&2
    exit 2
fi
workdir=${WEBCHAT_WORKDIR:-${HOME:-/tmp}}
history=${WEBCHAT_HISTORY:-20}
resume=${WEBCHAT_RESUME:-1}
flags=${WEBCHAT_RUNNER_FLAGS:-}
bin=${GTS_WEBCHAT_BIN:-gts-webchat}
task=${GTS_WEBCHAT_TASK:?run this from gts-webchat daemon --on-message}
count=${GTS_WEBCHAT_BATCH_COUNT:-1}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/webchat-wake.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
prompt_file="$tmp/prompt.txt"
answer_file="$tmp/answer.txt"

# The new record(s) arrive on stdin, one JSON line each; keep them for the runner.
cat > "$tmp/new.jsonl"

{
    printf 'You are %s, a participant in a gts-webchat conversation.\n' "${GTS_WEBCHAT_CHAT_ADDRESS:-an agent}"
    printf 'Recent messages (oldest first):\n\n'
    "$bin" tail --task "$task" -n "$((history + count))" 2>/dev/null || true
    printf '\n'
    if [ "$count" -gt 1 ]; then
        printf '%s new messages arrived (the last %s above). The newest is from %s (%s):\n' \
            "$count" "$count" "${GTS_WEBCHAT_FROM_NAME:-}" "${GTS_WEBCHAT_FROM:-}"
    else
        printf 'New %s from %s (%s), id %s:\n' "${GTS_WEBCHAT_TYPE:-message}" \
            "${GTS_WEBCHAT_FROM_NAME:-}" "${GTS_WEBCHAT_FROM:-}" "${GTS_WEBCHAT_MESSAGE_ID:-}"
    fi
    printf '%s\n' "${GTS_WEBCHAT_TEXT:-}"
    if [ "${GTS_WEBCHAT_ATTACHMENTS:-[]}" != "[]" ]; then
        printf '\nAttachments (with local copies under "path"): %s\n' "$GTS_WEBCHAT_ATTACHMENTS"
    fi
    printf '\nReply with the text to send back to them, and nothing else.\n'
} > "$prompt_file"
# Runners that take the prompt as an argument: stay under Linux's 128 KiB per-argument cap.
prompt=$(head -c 120000 "$prompt_file")

# First turn starts a session; later turns continue it (when WEBCHAT_RESUME=1).
marker_name=$(printf '%s' "$runner" | tr -c 'A-Za-z0-9._-' '_')
marker="$(dirname "${GTS_WEBCHAT_INBOX:-$tmp/x}")/runner-session.$marker_name"
continuing=0
if [ "$resume" = 1 ] && [ -e "$marker" ]; then continuing=1; fi

if ! cd "$workdir" 2>/dev/null; then
    echo "webchat-batch-wake: WEBCHAT_WORKDIR $workdir is not a directory; working in ${TMPDIR:-/tmp}" >&2
    cd "${TMPDIR:-/tmp}"
fi
# shellcheck disable=SC2086 # WEBCHAT_RUNNER_FLAGS is operator configuration, split on purpose
case "$runner" in
codex)
    # stdout carries only the final message; progress goes to stderr.
    if [ "$continuing" = 1 ]; then
        codex exec resume --last $flags - < "$prompt_file" > "$answer_file"
    else
        codex exec --skip-git-repo-check -s workspace-write $flags - < "$prompt_file" > "$answer_file"
    fi ;;
claude)
    if [ "$continuing" = 1 ]; then
        claude -c -p --output-format text $flags "$prompt" > "$answer_file"
    else
        claude -p --output-format text $flags "$prompt" > "$answer_file"
    fi ;;
aider)
    # aider has no final-answer-only mode: its stdout is the whole transcript of the turn.
    if [ "$continuing" = 1 ]; then
        aider --restore-chat-history --no-auto-commits --no-pretty --no-stream $flags --message-file "$prompt_file" > "$answer_file"
    else
        aider --no-auto-commits --no-pretty --no-stream $flags --message-file "$prompt_file" > "$answer_file"
    fi ;;
gemini)
    if [ "$continuing" = 1 ]; then
        gemini -r latest $flags -p "$prompt" > "$answer_file"
    else
        gemini $flags -p "$prompt" > "$answer_file"
    fi ;;
opencode)
    if [ "$continuing" = 1 ]; then
        opencode run -c $flags "$prompt" > "$answer_file"
    else
        opencode run $flags "$prompt" > "$answer_file"
    fi ;;
goose)
    # -q prints only the model's response; the session is named after the task.
    if [ "$continuing" = 1 ]; then
        goose run -r -q -n "webchat-$task" $flags -t "$prompt" > "$answer_file"
    else
        goose run -q -n "webchat-$task" $flags -t "$prompt" > "$answer_file"
    fi ;;
cursor)
    # Print mode has full write access in the working directory.
    cursor-agent -p --output-format text $flags "$prompt" > "$answer_file" ;;
*)
    if [ ! -x "$runner" ]; then
        echo "webchat-batch-wake: WEBCHAT_RUNNER=$runner is neither a known host nor an executable" >&2
        exit 2
    fi
    "$runner" < "$prompt_file" > "$answer_file" ;;
esac
if [ "$resume" = 1 ]; then touch "$marker" 2>/dev/null || true; fi

cat "$answer_file"
