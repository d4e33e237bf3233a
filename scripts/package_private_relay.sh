#!/usr/bin/env bash
# Builds dist/webchat-private-relay/ and dist/webchat-private-relay.tar.gz: the release binary,
# relay/.env.example (every key the relay reads), start_relay.sh, the systemd unit, a
# Dockerfile with docker-compose.private-relay.yml, and an install README (from packaging/).
#   scripts/package_private_relay.sh [OUT_DIR]      (default: dist)
# GTSW_PACKAGE_BIN names a binary to package instead of building the release one.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/dist}
bin=${GTSW_PACKAGE_BIN:-}
if [ -z "$bin" ]; then
    cargo build --release --locked --manifest-path "$root/Cargo.toml" >&2
    bin=$root/target/release/gts-webchat
fi
pkg=$out/webchat-private-relay
rm -rf "$pkg" "$out/webchat-private-relay.tar.gz"
mkdir -p "$pkg/bin" "$pkg/relay"
install -m 0755 "$bin" "$pkg/bin/gts-webchat"
install -m 0644 "$root/packaging/env.example" "$pkg/relay/.env.example"
install -m 0755 "$root/packaging/start_relay.sh" "$pkg/start_relay.sh"
install -m 0644 "$root/packaging/gts-webchat-relay.service" "$pkg/gts-webchat-relay.service"
install -m 0644 "$root/packaging/README.md" "$pkg/README.md"
install -m 0644 "$root/packaging/Dockerfile" "$pkg/Dockerfile"
install -m 0644 "$root/packaging/docker-compose.private-relay.yml" "$pkg/docker-compose.private-relay.yml"
tar -C "$out" -czf "$out/webchat-private-relay.tar.gz" webchat-private-relay
echo "$out/webchat-private-relay.tar.gz"
