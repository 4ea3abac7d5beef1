#!/usr/bin/env bash
# Parley's one test command: ./scripts/test.sh
#
# On a fresh Debian bookworm machine (as root, or with sudo) it installs what the
# tests need when it is missing, then runs rustfmt, clippy and the test suite.
# Every install step is skipped when its result is already there, so a second
# run goes straight to cargo.
#
#   ./scripts/test.sh                 install what is missing, then fmt + clippy + test
#   ./scripts/test.sh --setup-only    only install (Debian packages, Python venv, npm packages)
#   PARLEY_SKIP_SETUP=1 ./scripts/test.sh   skip every install step
#
# Extra arguments after `--` go to `cargo test`, e.g. ./scripts/test.sh -- whip
set -euo pipefail

# --- what the tests need ------------------------------------------------------

# Debian packages (checked one by one with `dpkg -s`; python3-venv is added below
# only when `python3 -m venv` cannot work without it).
APT_PACKAGES="ffmpeg prometheus chromium firefox-esr nftables iproute2 coturn redis-server"

# Python venv for the aiortc interop peer (tests/interop/aiortc_peer.py).
# Versions checked on PyPI for CPython 3.11 (Debian bookworm's python3 is 3.11).
PY_REQUIREMENTS="aiortc==1.16.0 aiohttp==3.14.5 av==18.1.0"

# npm packages under target/node for the browser tests (tests/browser.rs): playwright-core
# drives Debian's /usr/bin/chromium, puppeteer-core Debian's /usr/bin/firefox-esr (over
# WebDriver BiDi); neither downloads a browser. Needs Node.js 20 or newer.
NODE_PACKAGES="playwright-core@1.65.1 puppeteer-core@25.19.0"

# --- helpers -----------------------------------------------------------------

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

PYENV_DIR="$ROOT/target/pyenv"
LOG_DIR="$ROOT/target/test-logs"
mkdir -p "$LOG_DIR"

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
say() { printf '==> %s\n' "$*"; }
die() { printf '\nFAILED: %s\n' "$*" >&2; exit 1; }

T_ALL=$(now)
TIMINGS=()

# stage NAME CMD...: run CMD, print how long it took, stop the script on failure.
stage() {
    local name=$1
    shift
    local t0 rc=0
    t0=$(now)
    say "$name"
    "$@" || rc=$?
    TIMINGS+=("$(printf '%-8s %6ss' "$name" "$(since "$t0")")")
    if [ "$rc" -ne 0 ]; then
        say "$name failed after $(since "$t0")s (exit $rc)"
        case $name in
            fmt) echo "    fix with: cargo fmt --all" >&2 ;;
            apt|python|node) echo "    logs: $LOG_DIR/" >&2 ;;
        esac
        die "stage '$name' failed (exit $rc)"
    fi
    say "$name ok ($(since "$t0")s)"
}

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || SUDO_MISSING=1
    SUDO=(sudo)
fi

# --- setup: Debian packages -----------------------------------------------------

setup_apt() {
    local wanted=$APT_PACKAGES missing=() p
    # `python3 -m venv` needs ensurepip, which Debian ships in python3-venv.
    if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
        wanted="python3-venv $wanted"
    fi
    for p in $wanted; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        echo "    all present: $wanted"
        return 0
    fi
    command -v apt-get >/dev/null 2>&1 || die "missing Debian packages (${missing[*]}) and no apt-get"
    [ -z "${SUDO_MISSING:-}" ] || die "missing Debian packages (${missing[*]}): run as root or install sudo"
    echo "    installing: ${missing[*]} (log: $LOG_DIR/apt.log)"
    local env=(env DEBIAN_FRONTEND=noninteractive)
    if ! { "${SUDO[@]}" "${env[@]}" apt-get -q update &&
           "${SUDO[@]}" "${env[@]}" apt-get -q install -y --no-install-recommends "${missing[@]}"; } \
           >"$LOG_DIR/apt.log" 2>&1 </dev/null; then
        tail -n 30 "$LOG_DIR/apt.log" >&2
        return 1
    fi
}

# --- setup: Python venv ---------------------------------------------------------

setup_python() {
    local stamp="$PYENV_DIR/.parley-requirements"
    if [ -x "$PYENV_DIR/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$PY_REQUIREMENTS" ] &&
       "$PYENV_DIR/bin/python" -c 'import aiortc, aiohttp, av' >/dev/null 2>&1; then
        echo "    present: $PYENV_DIR ($PY_REQUIREMENTS)"
        return 0
    fi
    command -v python3 >/dev/null 2>&1 || die "python3 not found"
    echo "    creating $PYENV_DIR with $PY_REQUIREMENTS (log: $LOG_DIR/pip.log)"
    rm -rf "$PYENV_DIR"
    # shellcheck disable=SC2086 # PY_REQUIREMENTS is a space-separated list
    if ! { python3 -m venv "$PYENV_DIR" &&
           "$PYENV_DIR/bin/python" -m pip install --disable-pip-version-check -q $PY_REQUIREMENTS &&
           "$PYENV_DIR/bin/python" -c 'import aiortc, aiohttp, av'; } >"$LOG_DIR/pip.log" 2>&1 </dev/null; then
        tail -n 30 "$LOG_DIR/pip.log" >&2
        rm -rf "$PYENV_DIR"
        return 1
    fi
    printf '%s' "$PY_REQUIREMENTS" >"$stamp"
}

# --- setup: npm ---------------------------------------------------------------------

NODE_DIR="$ROOT/target/node"

setup_node() {
    local stamp="$NODE_DIR/.parley-packages" major
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        command -v apt-get >/dev/null 2>&1 || die "node and npm not found: install Node.js 20 or newer"
        [ -z "${SUDO_MISSING:-}" ] || die "node and npm not found: run as root or install sudo"
        echo "    installing: nodejs npm (log: $LOG_DIR/apt-node.log)"
        if ! { "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q update &&
               "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q install -y --no-install-recommends nodejs npm; } \
               >"$LOG_DIR/apt-node.log" 2>&1 </dev/null; then
            tail -n 30 "$LOG_DIR/apt-node.log" >&2
            return 1
        fi
    fi
    major=$(node -p 'process.versions.node.split(".")[0]')
    [ "$major" -ge 20 ] || die "playwright-core needs Node.js 20 or newer; this is $(node --version)"
    if [ "$(cat "$stamp" 2>/dev/null)" = "$NODE_PACKAGES" ] &&
       [ -d "$NODE_DIR/node_modules/playwright-core" ] &&
       [ -d "$NODE_DIR/node_modules/puppeteer-core" ]; then
        echo "    present: $NODE_DIR ($NODE_PACKAGES)"
        return 0
    fi
    echo "    installing $NODE_PACKAGES in $NODE_DIR (log: $LOG_DIR/npm.log)"
    mkdir -p "$NODE_DIR"
    # shellcheck disable=SC2086 # NODE_PACKAGES is a space-separated list
    if ! npm install --prefix "$NODE_DIR" --no-audit --no-fund --save-exact $NODE_PACKAGES \
           >"$LOG_DIR/npm.log" 2>&1 </dev/null; then
        tail -n 30 "$LOG_DIR/npm.log" >&2
        return 1
    fi
    printf '%s' "$NODE_PACKAGES" >"$stamp"
}

# --- checks ------------------------------------------------------------------------

check_rust() {
    command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust with rustup (https://rustup.rs)"
    cargo fmt --version >/dev/null 2>&1 || die "rustfmt missing: rustup component add rustfmt"
    cargo clippy --version >/dev/null 2>&1 || die "clippy missing: rustup component add clippy"
}

# --- load-generator smoke -----------------------------------------------------------

# A free TCP or UDP port on 127.0.0.1 (the kernel picks it; a tiny race is acceptable here).
free_port() {
    python3 -c "import socket,sys; s=socket.socket(socket.AF_INET, getattr(socket, sys.argv[1])); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])" "$1"
}

# Waits until `url` answers HTTP, while process `pid` lives, for at most `secs` seconds.
wait_http() {
    python3 - "$@" <<'PY'
import os, sys, time, urllib.request, urllib.error
url, pid, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + secs
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit(f"    the server (pid {pid}) exited before answering {url}")
    try:
        urllib.request.urlopen(url, timeout=1)
        sys.exit(0)
    except urllib.error.HTTPError:
        sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit(f"    {url} did not answer within {secs:.0f} s")
PY
}

# Ten seconds of `parley-load broadcast` (1 publisher, 5 viewers) against a debug server:
# checks that the generator and the server work together, not the figures.
smoke_load() {
    cargo build --quiet -p parley -p parley-load || return 1
    local http media pid rc=0 report="$ROOT/target/load-smoke.json"
    http=$(free_port SOCK_STREAM)
    media=$(free_port SOCK_DGRAM)
    "$ROOT/target/debug/parley" --http-listen "127.0.0.1:$http" --media-listen "127.0.0.1:$media" \
        --rate-limit-per-ip 0 >"$LOG_DIR/load-smoke-server.log" 2>&1 &
    pid=$!
    if ! wait_http "http://127.0.0.1:$http/" "$pid" 20; then
        rc=1
    else
        # No backtrace: the generator's one-line error is what a failed run needs to show.
        RUST_BACKTRACE=0 "$ROOT/target/debug/parley-load" broadcast --url "http://127.0.0.1:$http" \
            --viewers 5 --measure-secs 10 --settle-secs 1 --server-pid "$pid" --json "$report" \
            2>&1 | tee "$LOG_DIR/load-smoke.log" || rc=$?
    fi
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    if [ "$rc" -ne 0 ]; then
        echo "--- last lines of the server's log ($LOG_DIR/load-smoke-server.log):" >&2
        tail -n 20 "$LOG_DIR/load-smoke-server.log" >&2
        return "$rc"
    fi
    python3 - "$report" <<'PY'
import json, sys
step = json.load(open(sys.argv[1]))["steps"][0]
ok = step["joined"] == step["viewers"] and step["forwarded_pps"] > 0
print(f"    {step['joined']}/{step['viewers']} viewers joined, {step['forwarded_pps']:.0f} packets/s forwarded")
sys.exit(0 if ok else 1)
PY
}

# --- main --------------------------------------------------------------------------

SETUP_ONLY=0
CARGO_TEST_ARGS=()
while [ $# -gt 0 ]; do
    case $1 in
        --setup-only) SETUP_ONLY=1 ;;
        --) shift; CARGO_TEST_ARGS=("$@"); break ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done

if [ -z "${PARLEY_SKIP_SETUP:-}" ]; then
    stage apt setup_apt
    stage python setup_python
    stage node setup_node
fi

# The Rust integration tests run the aiortc peer with this interpreter.
export PARLEY_PYTHON="$ROOT/target/pyenv/bin/python"

if [ "$SETUP_ONLY" -eq 1 ]; then
    say "setup done in $(since "$T_ALL")s (PARLEY_PYTHON=$PARLEY_PYTHON)"
    exit 0
fi

check_rust
stage fmt cargo fmt --all -- --check
stage clippy cargo clippy --workspace --all-targets -- -D warnings
stage test cargo test --workspace --all-targets "${CARGO_TEST_ARGS[@]}"
stage load smoke_load

echo
say "timings:"
for t in "${TIMINGS[@]}"; do echo "    $t"; done
say "all checks passed in $(since "$T_ALL")s"
