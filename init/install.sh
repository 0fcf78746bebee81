#!/bin/sh
# `make install`: the binary, the init script of this system's kind, the example config,
# the service user and its directories.
#
#   BIN=target/release/usepod-edge PREFIX=/usr/local DESTDIR= INIT=auto sh init/install.sh
#
# BIN      the binary to install (a dist/ one for another machine's root, say)
# PREFIX   /usr/local: the binary goes to $PREFIX/bin (BINDIR overrides); the init files
#          are rewritten to run it from there
# DESTDIR  a staging root (packaging, a device's root filesystem): everything goes under
#          it and no user is created, nothing is chowned
# INIT     auto (systemd if /run/systemd/system exists, OpenRC if /sbin/openrc-run does,
#          else SysV), systemd, openrc, sysv or none
#
# Paths outside PREFIX are fixed: /etc/usepod-edge (config, 0750 root:usepod-edge),
# /var/lib/usepod-edge (identity, 0700 usepod-edge), /var/log/usepod-edge (SysV/OpenRC
# logs, 0750 usepod-edge). An existing config.json is never overwritten.
set -eu

cd "$(dirname "$0")/.."

BIN=${BIN:-target/release/usepod-edge}
PREFIX=${PREFIX:-/usr/local}
BINDIR=${BINDIR:-$PREFIX/bin}
DESTDIR=${DESTDIR:-}
INIT=${INIT:-auto}
SERVICE_USER=usepod-edge

say() { printf 'install: %s\n' "$*"; }
die() { printf 'install: %s\n' "$*" >&2; exit 1; }

[ -f "$BIN" ] || die "no binary at $BIN: run \`make build\` first (or BIN=dist/usepod-edge-...)"

if [ "$INIT" = auto ]; then
    if [ -d /run/systemd/system ]; then
        INIT=systemd
    elif [ -x /sbin/openrc-run ]; then
        INIT=openrc
    else
        INIT=sysv
    fi
fi
case "$INIT" in
    systemd | openrc | sysv | none) ;;
    *) die "INIT must be auto, systemd, openrc, sysv or none, not $INIT" ;;
esac

as_root=false
[ "$(id -u)" -eq 0 ] && as_root=true
if [ -z "$DESTDIR" ] && ! $as_root; then
    die "installing into / needs root (sudo make install), or set DESTDIR"
fi

# Install $1 as $2 (under DESTDIR) with mode $3, running the daemon from $BINDIR.
install_file() {
    mkdir -p "$DESTDIR$(dirname "$2")"
    sed "s|/usr/local/bin/usepod-edge|$BINDIR/usepod-edge|g" "$1" >"$DESTDIR$2.tmp"
    chmod "$3" "$DESTDIR$2.tmp"
    mv -f "$DESTDIR$2.tmp" "$DESTDIR$2"
    say "$2"
}

# The binary: install(1) replaces the file rather than writing into it, so a running
# agent keeps its old binary until restarted.
install -d "$DESTDIR$BINDIR"
install -m 0755 "$BIN" "$DESTDIR$BINDIR/usepod-edge"
say "$BINDIR/usepod-edge ($("$DESTDIR$BINDIR/usepod-edge" --version 2>/dev/null || echo "built for another machine"))"
# The probation script the init files run before each start (rolls a failed upgrade back).
install -m 0755 init/usepod-edge-probation "$DESTDIR$BINDIR/usepod-edge-probation"
say "$BINDIR/usepod-edge-probation"

case "$INIT" in
    systemd)
        install_file init/systemd/usepod-edge.service /etc/systemd/system/usepod-edge.service 0644
        ;;
    openrc)
        install_file init/openrc/usepod-edge /etc/init.d/usepod-edge 0755
        install_file init/logrotate/usepod-edge /etc/logrotate.d/usepod-edge 0644
        ;;
    sysv)
        install_file init/sysv/usepod-edge /etc/init.d/usepod-edge 0755
        install_file init/logrotate/usepod-edge /etc/logrotate.d/usepod-edge 0644
        ;;
    none) ;;
esac

# The service user (a system account, no login, no home of its own but the state dir).
if [ -n "$DESTDIR" ]; then
    say "DESTDIR set: not creating the $SERVICE_USER user nor chowning; on the target run:"
    say "  useradd --system --user-group --home-dir /var/lib/usepod-edge --shell /usr/sbin/nologin $SERVICE_USER"
    say "  chown root:$SERVICE_USER /etc/usepod-edge /etc/usepod-edge/config.json"
    say "  chown $SERVICE_USER:$SERVICE_USER /var/lib/usepod-edge /var/log/usepod-edge"
elif id "$SERVICE_USER" >/dev/null 2>&1; then
    say "user $SERVICE_USER exists"
else
    nologin=/usr/sbin/nologin
    [ -x "$nologin" ] || nologin=/sbin/nologin
    if command -v useradd >/dev/null 2>&1; then
        useradd --system --user-group --home-dir /var/lib/usepod-edge --no-create-home \
            --shell "$nologin" --comment "Use Pod provider agent" "$SERVICE_USER"
    elif command -v adduser >/dev/null 2>&1; then
        # BusyBox (Alpine).
        addgroup -S "$SERVICE_USER" 2>/dev/null || true
        adduser -S -D -H -h /var/lib/usepod-edge -s "$nologin" -G "$SERVICE_USER" "$SERVICE_USER"
    else
        die "cannot create the $SERVICE_USER user: no useradd or adduser"
    fi
    say "created system user $SERVICE_USER"
fi

# Directories: config readable by the service, state private to it, logs its own.
owner() { [ -z "$DESTDIR" ] && chown "$1" "$2"; return 0; }
install -d -m 0750 "$DESTDIR/etc/usepod-edge"
owner "root:$SERVICE_USER" "$DESTDIR/etc/usepod-edge"
install -d -m 0700 "$DESTDIR/var/lib/usepod-edge"
owner "$SERVICE_USER:$SERVICE_USER" "$DESTDIR/var/lib/usepod-edge"
if [ "$INIT" = sysv ] || [ "$INIT" = openrc ]; then
    install -d -m 0750 "$DESTDIR/var/log/usepod-edge"
    owner "$SERVICE_USER:$SERVICE_USER" "$DESTDIR/var/log/usepod-edge"
fi

# The config: the example only where there is none yet; the example itself always.
install -m 0644 init/config.example.json "$DESTDIR/etc/usepod-edge/config.example.json"
install -d "$DESTDIR$PREFIX/share/doc/usepod-edge"
install -m 0644 init/config.example.md "$DESTDIR$PREFIX/share/doc/usepod-edge/config.example.md"
config="$DESTDIR/etc/usepod-edge/config.json"
if [ -e "$config" ]; then
    say "/etc/usepod-edge/config.json exists: kept (the new example is config.example.json)"
else
    install -m 0640 init/config.example.json "$config"
    owner "root:$SERVICE_USER" "$config"
    say "/etc/usepod-edge/config.json from the example: put your enrollment code in it"
fi

case "$INIT" in
    systemd)
        if [ -z "$DESTDIR" ] && command -v systemctl >/dev/null 2>&1; then
            systemctl daemon-reload || true
        fi
        say "next: systemctl enable --now usepod-edge; journalctl -u usepod-edge -f"
        ;;
    openrc) say "next: rc-update add usepod-edge default; rc-service usepod-edge start" ;;
    sysv) say "next: update-rc.d usepod-edge defaults; service usepod-edge start" ;;
    none) ;;
esac
