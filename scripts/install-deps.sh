#!/usr/bin/env bash
# Installs the Debian packages flameprobe needs to build and test, if missing.
# Idempotent and quiet when everything is present. Needs root for apt-get.
set -euo pipefail

packages=(gcc libc6-dev make pkg-config libelf-dev zlib1g-dev clang llvm util-linux
          linux-perf golang-go podman runc catatonit busybox-static docker.io containerd
          openjdk-17-jdk-headless nodejs libjemalloc2 chromium)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The push contract tests decode requests a second way: Python's protobuf
# with messages compiled by grpcio-tools (PyPI), kept under target/.
pydeps="$(cd "$(dirname "$0")/.." && pwd)/target/pydeps"
if ! PYTHONPATH="$pydeps" python3 -c 'import grpc_tools.protoc, google.protobuf' 2>/dev/null; then
    echo "installing grpcio-tools (PyPI) into target/pydeps" >&2
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --target "$pydeps" grpcio-tools
fi
# The speedscope and browser tests (tests/suite/views.rs) run speedscope's
# offline page and the SVGs in headless Chromium through playwright-core,
# and validate files with ajv: npm packages locked in tests/browser/
# (package.json, package-lock.json), installed with `npm ci` into a cache
# directory outside the repository (the tests look in the same place).
cache="${FLAMEPROBE_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/flameprobe}"
spec="$(cd "$(dirname "$0")/.." && pwd)/tests/browser"
if ! cmp -s "$spec/package-lock.json" "$cache/node/package-lock.json" \
    || [ ! -d "$cache/node/node_modules/speedscope" ]; then
    if ! command -v npm >/dev/null; then
        echo "installing: npm" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null
    fi
    echo "installing the browser-test npm packages into $cache/node" >&2
    mkdir -p "$cache/node"
    cp "$spec/package.json" "$spec/package-lock.json" "$cache/node/"
    (cd "$cache/node" && npm ci --silent --no-audit --no-fund)
fi
if ! command -v cargo >/dev/null; then
    echo "error: cargo not found: install a Rust toolchain (1.80 or newer), e.g. with rustup" >&2
    exit 1
fi
