#!/usr/bin/env bash
# Install edge from this checkout as a hardened systemd service (Raspberry Pi OS, Debian):
# a system user, a venv under the prefix, the bundled models, the unit and a default config.
#
#   sudo scripts/install.sh [--prefix /opt/edge] [--no-enable] [--pip-args "ARGS"]
#   DESTDIR=stage scripts/install.sh --no-enable     stage the files under ./stage only
#
# Re-running is safe: it upgrades the venv from this checkout, replaces the models and the
# unit, keeps an existing /etc/edge/config.toml, and restarts the service.
#
# With DESTDIR set nothing outside DESTDIR is touched (no user, no chown, no systemctl): the
# commands are printed instead. The staged venv's scripts are rewritten to run from the final
# prefix, so run it in place as "$DESTDIR/opt/edge/venv/bin/python -P -m edge".
set -euo pipefail
umask 022

usage() {
    cat <<'EOF'
usage: scripts/install.sh [--prefix DIR] [--no-enable] [--pip-args "ARGS"]

  --prefix DIR       where the venv and models go (default /opt/edge)
  --no-enable        install only; do not enable or (re)start edge.service
  --pip-args "ARGS"  extra arguments for "pip install" of this checkout, e.g.
                     "--no-index --find-links /media/usb/wheels" for an offline install
                     (also read from $EDGE_PIP_ARGS)

environment:
  DESTDIR   stage everything under this directory and change nothing else on the system
  PYTHON    interpreter the venv is made from (default python3; needs 3.11 or later)
EOF
}

say() { printf '==> %s\n' "$*"; }
warn() { printf 'install.sh: warning: %s\n' "$*" >&2; }
die() {
    printf 'install.sh: error: %s\n' "$*" >&2
    exit 1
}

prefix=/opt/edge
enable=1
pip_args=${EDGE_PIP_ARGS:-}
python=${PYTHON:-python3}
destdir=${DESTDIR:-}

while (($#)); do
    case $1 in
    --prefix)
        (($# >= 2)) || die "--prefix needs a directory"
        prefix=$2
        shift 2
        ;;
    --prefix=*)
        prefix=${1#*=}
        shift
        ;;
    --no-enable)
        enable=0
        shift
        ;;
    --pip-args)
        (($# >= 2)) || die "--pip-args needs a value (quote it: --pip-args \"--no-deps\")"
        pip_args=$2
        shift 2
        ;;
    --pip-args=*)
        pip_args=${1#*=}
        shift
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        usage >&2
        die "unknown argument: $1"
        ;;
    esac
done

prefix=${prefix%/}
# The prefix is written into the unit file and sed replacements: keep it to plain characters.
[[ $prefix =~ ^/[A-Za-z0-9._/-]+$ ]] ||
    die "--prefix must be an absolute path of letters, digits, '.', '_', '-' and '/': got '$prefix'"

repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
[[ -f $repo/pyproject.toml && -f $repo/systemd/edge.service ]] ||
    die "$repo does not look like an edge checkout (no pyproject.toml or systemd/edge.service)"

if [[ -n $destdir ]]; then
    mkdir -p -- "$destdir"
    destdir=$(cd -- "$destdir" && pwd -P)
    [[ $destdir != / ]] || die "DESTDIR=/ would install into this system; unset DESTDIR instead"
    say "staging into $destdir (nothing outside it is changed)"
elif ((EUID != 0)); then
    die "installing into the system needs root: run it with sudo," \
        "or set DESTDIR=DIR to stage the files into a directory"
fi

# Runs a command that changes the system outside DESTDIR, or only prints it when staging (with
# paths as they will be on the target).
system() {
    local shown
    shown=$(printf ' %q' "$@")
    if [[ -n $destdir ]]; then
        printf '    would run:%s\n' "${shown//"$destdir"/}"
    else
        printf '    +%s\n' "$shown"
        "$@"
    fi
}

command -v "$python" >/dev/null ||
    die "'$python' not found: install Python 3.11 or later (apt install python3 python3-venv)"
"$python" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null ||
    die "$python must be Python 3.11 or later with the venv module (apt install python3-venv)"

venv=$destdir$prefix/venv
models_src=$repo/models
etc=$destdir/etc/edge
config=$etc/config.toml
secrets=$etc/secrets
unit=$destdir/etc/systemd/system/edge.service

# --- user and groups ------------------------------------------------------------------------
say "system user edge (groups video, plugdev)"
for group in video plugdev edge; do
    if [[ -n $destdir ]]; then
        printf '    would run (if group %s is missing): groupadd --system %s\n' "$group" "$group"
    elif ! getent group "$group" >/dev/null; then
        system groupadd --system "$group"
    fi
done
nologin=$(command -v nologin || echo /usr/sbin/nologin)
# shellcheck disable=SC2054 # "video,plugdev" is one argument: useradd's comma-separated list
useradd_cmd=(useradd --system --gid edge --groups video,plugdev --home-dir /var/lib/edge
    --no-create-home --shell "$nologin" --comment "edge inference daemon" edge)
if [[ -n $destdir ]]; then
    printf '    would run (if user edge is missing):%s\n' "$(printf ' %q' "${useradd_cmd[@]}")"
    printf '    would run (if user edge exists): usermod --append --groups video,plugdev edge\n'
elif id -u edge >/dev/null 2>&1; then
    system usermod --append --groups video,plugdev edge
else
    system "${useradd_cmd[@]}"
fi

# --- venv -----------------------------------------------------------------------------------
venv_args=()
# On a Pi, picamera2 and libcamera come from apt (python3-picamera2) and cannot be built from
# PyPI, so the venv must see the system site-packages when they are there.
if "$python" -c 'import picamera2' >/dev/null 2>&1; then
    venv_args+=(--system-site-packages)
    say "venv $venv (with system site-packages: picamera2 from apt is visible)"
else
    say "venv $venv"
fi
if [[ -x $venv/bin/python ]]; then
    # Refreshes pyvenv.cfg (the site-packages choice above) and keeps what is installed.
    "$python" -m venv --without-pip "${venv_args[@]}" "$venv"
else
    "$python" -m venv "${venv_args[@]}" "$venv" ||
        die "creating the venv failed; on Debian and Raspberry Pi OS: apt install python3-venv"
fi

say "pip install $repo${pip_args:+ ($pip_args)}"
read -r -a pip_extra <<<"$pip_args"
"$venv/bin/python" -I -m pip install --disable-pip-version-check --no-input --upgrade \
    "${pip_extra[@]}" "$repo" || die "pip install failed (see above)"

if [[ -n $destdir ]]; then
    # pip wrote "#!$DESTDIR/opt/edge/venv/bin/python" shebangs and activate scripts; point them at
    # the final location so the staged tree can be copied or packaged as it is.
    "$python" - "$venv" "$venv" "$prefix/venv" <<'EOF'
import sys
from pathlib import Path

venv, old, new = Path(sys.argv[1]), sys.argv[2].encode(), sys.argv[3].encode()
for path in [*sorted((venv / "bin").iterdir()), venv / "pyvenv.cfg"]:
    if path.is_file() and not path.is_symlink():
        data = path.read_bytes()
        if old in data:
            path.write_bytes(data.replace(old, new))
EOF
fi
# -P: run from the checkout's root, "-m edge" would import the checkout instead of the install;
# -s: root's ~/.local must not shadow the venv either.
version=$("$venv/bin/python" -s -P -m edge --version) ||
    die "the installed package does not run: '$venv/bin/python -s -P -m edge --version' failed"

# --- models and samples ---------------------------------------------------------------------
# Replaced as a whole so models removed from the checkout do not linger.
replace_tree() {
    local src=$1 dest=$2
    rm -rf -- "$dest.new"
    cp -R -- "$src" "$dest.new"
    rm -rf -- "$dest"
    mv -- "$dest.new" "$dest"
}
if [[ -d $models_src ]] && [[ -n $(ls -A -- "$models_src") ]]; then
    say "models -> $destdir$prefix/models"
    replace_tree "$models_src" "$destdir$prefix/models"
else
    warn "no models in $models_src: configure a model path in the config"
fi
if [[ -d $repo/samples ]]; then
    say "samples -> $destdir$prefix/samples"
    replace_tree "$repo/samples" "$destdir$prefix/samples"
fi

# --- command --------------------------------------------------------------------------------
# "edge listen", "edge info" and friends on the PATH; the service itself uses the venv path.
link=$destdir/usr/local/bin/edge
if [[ -e $link && ! -L $link ]]; then
    warn "$link exists and is not a link: left alone (use $prefix/venv/bin/edge)"
else
    say "command -> $link"
    install -d -m 0755 "$(dirname -- "$link")"
    ln -sfn -- "$prefix/venv/bin/edge" "$link"
fi

# --- unit, config, secrets ------------------------------------------------------------------
say "unit -> $unit"
install -d -m 0755 "$(dirname -- "$unit")"
sed "s|/opt/edge/|$prefix/|g" "$repo/systemd/edge.service" >"$unit.tmp"
chmod 0644 "$unit.tmp"
mv -- "$unit.tmp" "$unit"

install -d -m 0755 "$etc"
if [[ -e $config ]]; then
    say "config $config exists: kept as it is"
    config_new=0
else
    say "config -> $config (a starting point: edit it)"
    sed "s|/opt/edge/|$prefix/|g" "$repo/systemd/config.example.toml" >"$config.tmp"
    chmod 0640 "$config.tmp"
    mv -- "$config.tmp" "$config"
    # Readable by the daemon's group, not by every user: it names hosts and user names.
    system chown root:edge "$config"
    config_new=1
fi

say "secrets directory -> $secrets (0700, root only; systemd passes its files to the daemon)"
install -d -m 0700 "$secrets"
chmod 0700 "$secrets"
system chown root:root "$secrets"

# --- systemd --------------------------------------------------------------------------------
started=0
if [[ -z $destdir && ! -d /run/systemd/system ]]; then
    warn "this system is not running systemd: skipping systemctl (run it after booting)"
else
    say "systemd"
    system systemctl daemon-reload
    if ((enable)); then
        system systemctl enable edge.service
        # restart, not "enable --now": on an upgrade the running daemon must pick up the new code.
        if ! system systemctl restart edge.service; then
            warn "edge.service did not start; see: journalctl -u edge -n 50"
        elif [[ -z $destdir ]]; then
            started=1
        fi
    fi
fi

# --- summary --------------------------------------------------------------------------------
cat <<EOF

Installed $version
  venv      $venv
  models    $destdir$prefix/models
  unit      $unit
  config    $config$( ((config_new)) && echo " (new)" || echo " (kept)")
  secrets   $secrets/

Next steps:
  1. Edit /etc/edge/config.toml: broker host, cameras, model.
  2. If the broker needs a password, put it in /etc/edge/secrets/mqtt-password.
  3. $( ((started)) && echo "sudo systemctl reload edge    (applies config changes)" ||
    echo "sudo systemctl enable edge && sudo systemctl restart edge")
  4. Watch it: journalctl -u edge -f    and its results: edge listen
  Overrides go in a drop-in (sudo systemctl edit edge), not in the unit file.
EOF
if [[ -n $destdir ]]; then
    echo "  (staged under $destdir: run it in place with $venv/bin/python -P -m edge)"
fi
