#!/usr/bin/env bash
# `make bench`: builds REV's shipped binary (x86_64 static musl, as cross/dist.sh builds
# it) in a git worktree under target/, so the bench can measure it in the same run as
# the current build. Prints the binary's path on stdout; the build's output goes to
# stderr. The worktree and the target dir are reused from run to run.
set -euo pipefail
rev=$(git rev-parse --verify "${1:?usage: baseline.sh REV}^{commit}")
root=$(pwd)
wt="$root/target/bench-baseline/src"
if [ -e "$wt/.git" ]; then
    git -C "$wt" checkout -q --detach "$rev"
else
    rm -rf "$wt"
    git worktree add -q --detach "$wt" "$rev" >&2
fi
# Our own target dir: its dependencies are built already, only the crate is rebuilt.
(cd "$wt" && CARGO_TARGET_DIR="$root/target/bench-baseline/target" \
    bash cross/musl-env.sh --no-install cargo build --release --locked \
    --target x86_64-unknown-linux-musl --bin usepod-edge) >&2
echo "$root/target/bench-baseline/target/x86_64-unknown-linux-musl/release/usepod-edge"
