#!/usr/bin/env bash
# `make dist`: fully static, stripped release binaries without docker, one per target, in
# dist/usepod-edge-<version>-<target>, with dist/SHA256SUMS. Installs what it needs when
# missing (see cross/musl-env.sh), checks each binary is static and stripped and runs its
# --version (aarch64 under qemu-user), enforces the aarch64 size budget and prints sizes.
#
# Environment: DIST_TARGETS (default: aarch64-unknown-linux-musl x86_64-unknown-linux-musl),
# DIST_MAX_BYTES_AARCH64 (default 2300000, the design card's budget), USEPOD_NO_INSTALL=1 (never install anything).
#
# Signing (docs/upgrades.md): with USEPOD_EDGE_SIGNING_KEY_FILE (a key file from
# `usepod-edge release-key`) or USEPOD_EDGE_SIGNING_KEY (its base64 seed, a CI secret) set, each
# binary gets a detached signature dist/<binary>.sig, written by one of the binaries just built
# (`release-sign`, run here as --version is). DIST_REQUIRE_SIGNATURE=1 fails without a key.
set -euo pipefail
cd "$(dirname "$0")/.."
# The shipped build's link flags (cross/musl-env.sh).
export MUSL_SHIPPED=1

DIST_TARGETS=${DIST_TARGETS:-"aarch64-unknown-linux-musl x86_64-unknown-linux-musl"}
DIST_MAX_BYTES_AARCH64=${DIST_MAX_BYTES_AARCH64:-2300000}
CARGO=${CARGO:-cargo}
TARGET_DIR=${CARGO_TARGET_DIR:-target}

MUSL_TARGETS=$DIST_TARGETS
# shellcheck source=cross/musl-env.sh
. cross/musl-env.sh
musl_ensure
musl_export

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
[ -n "$version" ] || { echo "dist: no version in Cargo.toml" >&2; exit 1; }

fail() { echo "dist: $*" >&2; exit 1; }

# The command that runs a binary of this target here.
runner_for() {
    case "$1" in
        aarch64-*) echo qemu-aarch64-static ;;
        armv7-*) echo qemu-arm-static ;;
        *) echo "" ;;
    esac
}

mkdir -p dist
built=()
for t in $DIST_TARGETS; do
    echo "dist: building $t (release)" >&2
    start=$SECONDS
    nice -n 10 "$CARGO" build --release --locked --bin usepod-edge --target "$t"
    echo "dist: $t built in $((SECONDS - start)) s" >&2
    # cross/link-hot-first.sh leaves what it placed first beside the binary.
    hot=$(ls -t "$TARGET_DIR/$t/release/deps/"usepod_edge-*.hot-order.txt 2>/dev/null | head -n 1)
    if [ -n "$hot" ]; then
        echo "dist: $t: $(cat "$hot")" >&2
    else
        echo "dist: $t: linked without the hot-first layout (cross/link-hot-first.sh did not run)" >&2
    fi

    out="dist/usepod-edge-$version-$t"
    # A signature of an earlier build must not sit beside this one.
    rm -f "$out.sig"
    cp "$TARGET_DIR/$t/release/usepod-edge" "$out.tmp"
    info=$(file -b "$out.tmp")
    case "$info" in
        *"not stripped"*) command -v llvm-strip >/dev/null && llvm-strip "$out.tmp"
                          info=$(file -b "$out.tmp") ;;
    esac
    case "$info" in
        *dynamically*|*"interpreter"*) fail "$out is not static: $info" ;;
        *"statically linked"*|*"static-pie linked"*) ;;
        *) fail "$out: cannot tell whether it is static: $info" ;;
    esac
    case "$info" in
        *"not stripped"*) fail "$out is not stripped: $info" ;;
    esac
    mv -f "$out.tmp" "$out"

    runner=$(runner_for "$t")
    # shellcheck disable=SC2086 # runner is one word or empty
    got=$($runner "./$out" --version) || fail "$out --version failed${runner:+ under $runner}"
    case "$got" in
        *"$version"*) ;;
        *) fail "$out --version printed '$got', expected $version" ;;
    esac
    echo "dist: $out: $info" >&2
    built+=("$(basename "$out")")
done

(cd dist && sha256sum "${built[@]}" > SHA256SUMS)

signed=no
if [ -n "${USEPOD_EDGE_SIGNING_KEY_FILE:-}" ] || [ -n "${USEPOD_EDGE_SIGNING_KEY:-}" ]; then
    # Any of the binaries can sign: the first target's, under its runner.
    first=${DIST_TARGETS%% *}
    runner=$(runner_for "$first")
    signer="./dist/usepod-edge-$version-$first"
    files=()
    for f in "${built[@]}"; do files+=("dist/$f"); done
    # shellcheck disable=SC2086 # runner is one word or empty
    $runner "$signer" release-sign "${files[@]}" >&2 || fail "signing failed"
    signed=yes
elif [ "${DIST_REQUIRE_SIGNATURE:-0}" = 1 ]; then
    fail "DIST_REQUIRE_SIGNATURE=1 but neither USEPOD_EDGE_SIGNING_KEY_FILE nor USEPOD_EDGE_SIGNING_KEY is set"
else
    echo "dist: not signed (no USEPOD_EDGE_SIGNING_KEY_FILE or USEPOD_EDGE_SIGNING_KEY)" >&2
fi

echo
echo "dist/ (version $version):"
over=0
for f in "${built[@]}"; do
    bytes=$(stat -c %s "dist/$f")
    printf '  %-55s %9d bytes  %5.2f MB\n' "$f" "$bytes" "$(awk -v b="$bytes" 'BEGIN { print b / 1000000 }')"
    case "$f" in
        *aarch64*) if [ "$bytes" -gt "$DIST_MAX_BYTES_AARCH64" ]; then
                       echo "dist: $f is $bytes bytes, over the budget of $DIST_MAX_BYTES_AARCH64" >&2
                       over=1
                   fi ;;
    esac
done
echo "  SHA256SUMS"
if [ "$signed" = yes ]; then
    echo "  <binary>.sig for each (release signatures)"
fi
exit "$over"
