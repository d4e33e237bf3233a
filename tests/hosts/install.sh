#!/usr/bin/env bash
# Installs the real AI host CLIs that tests/hosts.rs drives, into a cache outside the checkout
# that later runs reuse: the npm packages pinned in tests/hosts/package-lock.json, and aider from
# PyPI (tests/hosts/requirements.txt) in a venv of its own. Only the install scripts that
# package.json's allowScripts approves run (opencode's and Claude Code's, which put their binary
# in place). Prints the folder of host programs on stdout; on a cache hit it installs nothing.
#
#   tests/hosts/install.sh [CACHE_DIR]    (default $GTSW_HOSTS_CACHE, else ~/.cache/gts-webchat/hosts)
#
# A part that cannot be installed (no registry) is reported on stderr and left out: its tests
# then say they skipped it, unless GTSW_REQUIRE_HOSTS=1 (as .ci/run sets) makes that a failure.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${1:-${GTSW_HOSTS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gts-webchat/hosts}}
mkdir -p "$cache/npm" "$cache/bin"

stamp_of() { sha256sum "$@" | sha256sum | cut -d' ' -f1; }

npm_stamp=$(stamp_of "$here/package.json" "$here/package-lock.json")
if [ "$(cat "$cache/npm/.stamp" 2>/dev/null)" != "$npm_stamp" ]; then
    echo "installing the host CLIs from npm into $cache/npm (once)" >&2
    cp "$here/package.json" "$here/package-lock.json" "$cache/npm/"
    # `npm install` with the lock rather than `npm ci`: the lock leaves out other platforms'
    # optional binaries, which `npm ci` wrongly counts as missing.
    if npm install --prefix "$cache/npm" --no-audit --no-fund --strict-allow-scripts >&2; then
        echo "$npm_stamp" > "$cache/npm/.stamp"
    else
        echo "tests/hosts/install.sh: npm could not install the host CLIs; their tests will be skipped" >&2
    fi
fi

aider_stamp=$(stamp_of "$here/requirements.txt")
if [ "$(cat "$cache/aider/.stamp" 2>/dev/null)" != "$aider_stamp" ]; then
    echo "installing aider from PyPI into $cache/aider (once)" >&2
    rm -rf "$cache/aider"
    if python3 -m venv "$cache/aider" &&
        "$cache/aider/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt" >&2; then
        echo "$aider_stamp" > "$cache/aider/.stamp"
    else
        echo "tests/hosts/install.sh: pip could not install aider; its test will be skipped" >&2
    fi
fi

# One folder with just the host programs (the venv's python stays off PATH).
for p in codex claude gemini qwen opencode copilot; do
    [ -e "$cache/npm/node_modules/.bin/$p" ] && ln -sfn "$cache/npm/node_modules/.bin/$p" "$cache/bin/$p"
done
[ -e "$cache/aider/bin/aider" ] && ln -sfn "$cache/aider/bin/aider" "$cache/bin/aider"
echo "$cache/bin"
