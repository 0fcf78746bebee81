#!/usr/bin/env bash
# Docker-free cross-build environment for the static musl targets (see docs/design.md,
# "Cross-building here"): clang + llvm-ar compile ring's C/asm for the target, rust-lld
# (shipped with the Rust toolchain) links against Rust's self-contained musl, and
# qemu-aarch64-static runs aarch64 binaries and tests. No docker, no `cross`.
#
#   cross/musl-env.sh [--no-install] COMMAND...   set up the tools, export the env, run COMMAND
#   . cross/musl-env.sh                           (from bash) define musl_ensure / musl_export
#
# Missing tools are installed when possible (rustup targets; apt packages when root), unless
# --no-install is given or USEPOD_NO_INSTALL=1. MUSL_TARGETS names the targets to prepare
# (default: aarch64-unknown-linux-musl x86_64-unknown-linux-musl).

MUSL_TARGETS=${MUSL_TARGETS:-"aarch64-unknown-linux-musl x86_64-unknown-linux-musl"}

musl_log() { printf 'musl-env: %s\n' "$*" >&2; }

# Install (or report) whatever is missing for MUSL_TARGETS. Returns non-zero if something
# is still missing afterwards.
musl_ensure() {
    local t missing_targets=() pkgs=() installed
    installed=$(rustup target list --installed 2>/dev/null) || {
        musl_log "rustup not found: install Rust with rustup (https://rustup.rs)"
        return 1
    }
    for t in $MUSL_TARGETS; do
        grep -qx "$t" <<<"$installed" || missing_targets+=("$t")
    done
    command -v clang >/dev/null || pkgs+=(clang)
    command -v llvm-ar >/dev/null || pkgs+=(llvm)
    command -v file >/dev/null || pkgs+=(file)
    case " $MUSL_TARGETS " in
        *" aarch64-unknown-linux-musl "*)
            command -v qemu-aarch64-static >/dev/null || pkgs+=(qemu-user-static) ;;
    esac
    case " $MUSL_TARGETS " in
        *" armv7-unknown-linux-musleabihf "*)
            command -v qemu-arm-static >/dev/null || pkgs+=(qemu-user-static) ;;
    esac

    if [ "${#missing_targets[@]}" -gt 0 ]; then
        if [ "${USEPOD_NO_INSTALL:-0}" = 1 ]; then
            musl_log "missing rustup targets: ${missing_targets[*]} (rustup target add ${missing_targets[*]})"
            return 1
        fi
        musl_log "rustup target add ${missing_targets[*]}"
        rustup target add "${missing_targets[@]}" || return 1
    fi
    if [ "${#pkgs[@]}" -gt 0 ]; then
        # Deduplicate (qemu-user-static may be listed twice).
        mapfile -t pkgs < <(printf '%s\n' "${pkgs[@]}" | sort -u)
        local sudo=()
        if [ "$(id -u)" -ne 0 ]; then
            if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
                sudo=(sudo -n)
            else
                musl_log "missing packages: ${pkgs[*]}; install them (apt-get install ${pkgs[*]}) and re-run"
                return 1
            fi
        fi
        if [ "${USEPOD_NO_INSTALL:-0}" = 1 ] || ! command -v apt-get >/dev/null; then
            musl_log "missing packages: ${pkgs[*]}; install them with your package manager and re-run"
            return 1
        fi
        musl_log "apt-get install ${pkgs[*]}"
        "${sudo[@]}" apt-get update -qq || return 1
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
            "${pkgs[@]}" >/dev/null || return 1
    fi
}

# Export the per-target compiler, archiver, linker and runner. Only target-specific
# variables are set, so host builds (build scripts, the other engineers' `cargo test`)
# keep their own settings and fingerprints.
musl_export() {
    local sysroot host lld
    sysroot=$(rustc --print sysroot) || return 1
    host=$(rustc -vV | sed -n 's/^host: //p')
    lld="$sysroot/lib/rustlib/$host/bin/rust-lld"
    if [ ! -x "$lld" ]; then
        musl_log "rust-lld not found at $lld (it ships with rustup toolchains)"
        return 1
    fi
    # Shipped builds (MUSL_SHIPPED=1) pack their relative relocations (RELR, applied by
    # musl's static-pie start code): 24 bytes of .rela.dyn per pointer become about one
    # bit, 100 KB off either binary and 100 KiB less read at every start. And they link
    # through cross/link-hot-first.sh, which places the functions the idle agent runs side
    # by side at the start of .text, so the rest of it is not paged in (docs/benchmarks.md,
    # "Idle footprint").
    local shipped="" link="$lld"
    if [ "${MUSL_SHIPPED:-0}" = 1 ]; then
        shipped=" -C linker-flavor=ld.lld -C link-arg=--no-eh-frame-hdr -C link-arg=-zpack-relative-relocs"
        link="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/link-hot-first.sh"
        export USEPOD_LINK_REAL="$lld"
    fi
    # aarch64 (Jetson and other ARM64 boards)
    export CC_aarch64_unknown_linux_musl=clang
    export AR_aarch64_unknown_linux_musl=llvm-ar
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER="$link"
    # Identical code folding: lld merges identical functions (generic
    # instantiations, mostly), 14 KB off a binary that has a 2.0 MB budget.
    # MUSL_SHIPPED=1 (cross/dist.sh, make bench): the binary operators run also goes
    # without .eh_frame_hdr, the index an unwinder searches (71 KB on aarch64). With
    # panic = "abort" nothing unwinds; only a RUST_BACKTRACE backtrace reads it, and it
    # then prints no frames (a stripped binary has no names to show anyway). Test builds
    # keep it: the test harness unwinds to report a failing test.
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_RUSTFLAGS:--C link-arg=--icf=all$shipped}"
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_RUNNER=qemu-aarch64-static
    # x86_64: the same toolchain, so both builds are made the same way.
    export CC_x86_64_unknown_linux_musl=clang
    export AR_x86_64_unknown_linux_musl=llvm-ar
    export CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_LINKER="$link"
    [ -z "$shipped" ] || export CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="${CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS:-${shipped# }}"
    # armv7 (32-bit ARM boards); not built by `make dist`, works the same way.
    export CC_armv7_unknown_linux_musleabihf=clang
    export AR_armv7_unknown_linux_musleabihf=llvm-ar
    export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_MUSLEABIHF_LINKER="$lld"
    export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_MUSLEABIHF_RUNNER=qemu-arm-static
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    if [ "${1:-}" = "--no-install" ]; then
        USEPOD_NO_INSTALL=1
        shift
    fi
    if [ "$#" -eq 0 ]; then
        echo "usage: $0 [--no-install] COMMAND..." >&2
        exit 2
    fi
    musl_ensure
    musl_export
    exec "$@"
fi
