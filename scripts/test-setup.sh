#!/usr/bin/env bash
# Installs what the tests and scripts/maelstrom.sh need besides the Rust
# toolchain, on a fresh Debian or Ubuntu machine: kcat (tests/serve/kafka.rs),
# a C compiler and the C library headers (the LD_PRELOAD shims of
# tests/durability/faults.rs and powerloss.rs), the Python Kafka
# clients pinned in tests/kafka_clients/requirements.txt, and gnuplot and
# graphviz, without which every Maelstrom run ends ":valid? :unknown";
# and for the console's browser test (tests/serve/console.rs) Debian's
# Chromium, Node.js and npm, and the npm packages pinned in
# tests/console/package-lock.json (playwright-core, which drives the
# system's Chromium and never downloads a browser); and kafkajs, pinned in
# tests/kafka_clients/package-lock.json, for the idempotent producer test.
# (Maelstrom's Java 17 is not installed here.)
#
# Installs only what is missing and prints nothing when everything is there,
# so it is safe to run before every test run (scripts/test.sh does).
set -euo pipefail
cd "$(dirname "$0")/.."

requirements=tests/kafka_clients/requirements.txt

# apt-get as root, or through sudo.
apt() {
    if [ "$(id -u)" -eq 0 ]; then
        env DEBIAN_FRONTEND=noninteractive apt-get "$@"
    else
        sudo env DEBIAN_FRONTEND=noninteractive apt-get "$@"
    fi
}

packages=()
command -v kcat >/dev/null 2>&1 || packages+=(kcat)
command -v cc >/dev/null 2>&1 || packages+=(gcc libc6-dev)
command -v gnuplot >/dev/null 2>&1 || packages+=(gnuplot-nox)
command -v dot >/dev/null 2>&1 || packages+=(graphviz)
python3 -m pip --version >/dev/null 2>&1 || packages+=(python3 python3-pip)
[ -x /usr/bin/chromium ] || packages+=(chromium chromium-driver)
command -v node >/dev/null 2>&1 || packages+=(nodejs)
command -v npm >/dev/null 2>&1 || packages+=(npm)
if [ ${#packages[@]} -gt 0 ]; then
    echo "test-setup: installing ${packages[*]}" >&2
    apt update -qq
    apt install -y -qq "${packages[@]}" >/dev/null
fi

# Whether every client pinned in the requirements is installed at its
# version (read from the installed packages: no network).
pinned_clients_installed() {
    python3 - "$requirements" <<'PY' 2>/dev/null
import importlib.metadata
import sys

for line in open(sys.argv[1]):
    requirement = line.split("#")[0].strip()
    if requirement:
        name, version = requirement.split("==")
        if importlib.metadata.version(name) != version:
            sys.exit(1)
PY
}
if ! pinned_clients_installed; then
    echo "test-setup: installing the Python Kafka clients of $requirements" >&2
    pip_install() {
        python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
            "$@" -r "$requirements"
    }
    # A distribution's own Python refuses installs outside a virtualenv
    # (PEP 668, "externally-managed-environment"); these pinned test
    # clients go beside its packages then, as on a throwaway test machine.
    if ! pip_install 2>/tmp/seglog-pip.err; then
        if grep -q externally-managed /tmp/seglog-pip.err; then
            pip_install --break-system-packages
        else
            cat /tmp/seglog-pip.err >&2
            exit 1
        fi
    fi
fi

# Node.js 20 or later: playwright-core and the console test use what older
# ones lack, and Debian before 13 (trixie) or Ubuntu before 24.04 ships an
# older one. Checked whether it came from apt above or was there before.
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
    if [ "$node_major" -eq 0 ]; then found="no working node"; else found="Node.js $(node --version)"; fi
    cat >&2 <<EOF_NODE
test-setup: the console test (tests/serve/console.rs) needs Node.js 20 or later, and found $found.
  Install Node.js 20 or later, then run this again, for example:
    - from NodeSource: curl -fsSL https://deb.nodesource.com/setup_22.x | sudo -E bash - && sudo apt-get install -y nodejs
    - with nvm: nvm install 22 && nvm use 22
    - on Debian 13 or Ubuntu 24.04 and later: sudo apt-get install nodejs npm
EOF_NODE
    exit 1
fi

# The npm packages of DIR, exactly as its package-lock.json locks them;
# only when the installed PACKAGE is not the locked one (npm ci starts
# from a clean node_modules).
npm_locked() {
    local dir=$1 package=$2
    if ! (cd "$dir" && node -e '
        const name = process.argv[1];
        const lock = require("./package-lock.json").packages["node_modules/" + name];
        const installed = require("./node_modules/" + name + "/package.json");
        process.exit(lock.version === installed.version ? 0 : 1);
    ' "$package" 2>/dev/null); then
        echo "test-setup: installing the npm packages of $dir/package-lock.json" >&2
        npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error >/dev/null
    fi
}
# kafkajs for tests/serve/idempotence.rs; playwright-core for the console.
npm_locked tests/kafka_clients kafkajs
npm_locked tests/console playwright-core
