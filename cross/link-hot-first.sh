#!/usr/bin/env bash
# The shipped builds' linker (cross/musl-env.sh sets it when MUSL_SHIPPED=1): the real
# linker ($USEPOD_LINK_REAL: rust-lld, or a cc that drives lld), with the functions the
# idle agent runs (cross/hot-functions.txt) placed first, side by side in .text.
#
# Why: the kernel maps a binary's cached pages around every page fault (fault-around,
# 64 KiB; whole large folios on newer kernels), so code that runs once at startup, spread
# over the binary, leaves nearly all of .text resident. Packed together, the code the agent
# runs fills about 870 KiB and the rest stays on disk (docs/benchmarks.md, "Idle footprint").
#
# The list's names are matched against the symbols the objects being linked define, so it
# outlives a change of code, dependency or toolchain; lld gets the exact names
# (--symbol-ordering-file). Names not found are left out; nothing else about the link
# changes. The names handed to lld and how many were found land beside the output
# (<output>.hot-order, <output>.hot-order.txt). cross/hot-functions.sh regenerates the list.
set -euo pipefail

real=${USEPOD_LINK_REAL:?"link-hot-first.sh: USEPOD_LINK_REAL (the real linker) is not set"}
list=${USEPOD_HOT_FUNCTIONS:-"$(dirname "$0")/hot-functions.txt"}

# rust-lld drives every lld and must be told which one to be, as rustc does for a linker
# of lld's flavor (-C linker-flavor=ld.lld). A cc driver passes linker options on with -Wl,.
case "$(basename "$real")" in
    rust-lld)
        [ "${1:-}" = -flavor ] || set -- -flavor gnu "$@"
        opt() { printf '%s\n' "$1"; } ;;
    *lld*) opt() { printf '%s\n' "$1"; } ;;
    *) opt() { printf -- '-Wl,%s\n' "$1"; } ;;
esac

# cross/hot-functions.sh needs the names in a binary built as the shipped one is (a build
# with `strip = false` would be another profile, whose symbols carry other hashes).
if [ "${USEPOD_LINK_KEEP_SYMBOLS:-0}" = 1 ]; then
    kept=()
    for a in "$@"; do
        case "$a" in --strip-all|-Wl,--strip-all|-s) ;; *) kept+=("$a") ;; esac
    done
    set -- "${kept[@]}"
fi

out=""
objects=()
collect() {
    local prev="" a
    for a in "$@"; do
        [ "$prev" = "-o" ] && out=$a
        case "$a" in
            *.o) objects+=("$a") ;;
        esac
        prev=$a
    done
}
collect "$@"
# rustc hands over a response file when the command line is too long.
for a in "$@"; do
    case "$a" in
        @*) [ -f "${a#@}" ] && mapfile -t rsp < "${a#@}" && collect "${rsp[@]}" ;;
    esac
done

# Only lld reads an ordering file: a cc that links with another linker (GNU ld is still
# rustc's choice on other hosts than x86_64 Linux) links as it would have.
uses_lld=yes
case "$(basename "$real")" in
    *lld*) ;;
    *) case " $* " in *" -fuse-ld=lld "*) ;; *) uses_lld=no ;; esac ;;
esac

if [ "$uses_lld" = no ] || [ -z "$out" ] || [ ! -f "$list" ] || [ "${#objects[@]}" -eq 0 ] \
    || ! command -v llvm-nm >/dev/null; then
    exec "$real" "$@"
fi

order="$out.hot-order"
# Each Rust name of the list is taken as it is when an object defines it, else by its key:
# the name less its build-specific parts (the legacy `17h<hash>E` suffix, v0 crate
# disambiguators `Cs<hash>_`, LLVM's `.<n>` suffixes), which matches every instance of a
# generic function and so places a few more than ran. C and assembly names (musl, ring)
# are passed on as they are: lld finds them in the archives.
llvm-nm --defined-only --format=just-symbols "${objects[@]}" 2>/dev/null \
    | awk -v stats="$order.txt" '
        function key(s) {
            sub(/\.[0-9]+$/, "", s)
            if (s ~ /^_ZN/) sub(/17h[0-9a-f]+E$/, "E", s)
            if (s ~ /^_R/) gsub(/Cs[0-9A-Za-z]+_/, "C", s)
            return s
        }
        function put(s) { if (!(s in done)) { print s; done[s] = 1 } }
        FNR == NR {
            if ($0 ~ /^[ \t]*(#|$)/) next
            order[++wanted] = $1
            next
        }
        {
            defined[$1] = 1
            k = key($1)
            syms[k] = (k in syms) ? syms[k] SUBSEP $1 : $1
        }
        END {
            # A name from the other target (other hashes) stands for a function
            # already placed by its own name: no need to place every instance by key.
            for (i = 1; i <= wanted; i++)
                if (order[i] in defined) covered[key(order[i])] = 1
            for (i = 1; i <= wanted; i++) {
                s = order[i]
                if (s !~ /^_(ZN|R)/) { put(s); other++; continue }
                if (s in defined) { put(s); exact++; continue }
                k = key(s)
                if ((k in covered) || !(k in syms)) continue
                n = split(syms[k], all, SUBSEP)
                for (j = 1; j <= n; j++) put(all[j])
                bykey++
                covered[k] = 1
            }
            printf "Rust functions placed first: %d by name, %d more by name less hashes; %d C and assembly names passed on\n", \
                exact, bykey, other > stats
        }' "$list" - > "$order"

exec "$real" "$@" "$(opt "--symbol-ordering-file=$order")" "$(opt --no-warn-symbol-ordering)"
