#!/usr/bin/env bash
# Run the README's two commands on a fresh machine: a clean Debian root made with debootstrap,
# holding only Debian's base system and the README's prerequisites (Python 3.11 with venv and
# pip, a C compiler and the Python headers, make, git). Nothing installed by hand on this host
# can leak in: no dataset, no package, no cache, no virtualenv. Only the host's package
# *configuration* is passed in: its apt sources and apt settings, its pip configuration (files,
# PIP_* variables, and the local wheel folders and indexes they name, mounted read-only) and
# its npm configuration, so that the root reaches packages the way this host does.
#
#   scripts/fresh-check.sh                 # clone HEAD into a fresh root; make run, then make test
#   scripts/fresh-check.sh --only test     # make test alone (its time then includes the install)
#   scripts/fresh-check.sh --ref main --keep
#
# Runs as root (debootstrap, chroot, mounts). The root runs in its own mount and PID namespace
# (unshare): when a command ends, every process it started is gone and every mount with it.
# `make test` runs with CI=true, so a test that would skip for want of something the project
# installs fails instead. Prints each command's exit status and wall time; logs go to
# $WORK/logs/. The pristine base root is cached in $WORK/base (never entered; --no-cache to
# rebuild it) and copied for each check.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${ESGD_FRESH_WORK:-/var/tmp/esgd-fresh}
REF=HEAD
ONLY=""
KEEP=0
CACHE=1
usage() { echo "usage: scripts/fresh-check.sh [--ref REF] [--only run|test] [--keep] [--no-cache] [--work DIR]" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --ref) REF=${2:?--ref needs a git revision}; shift 2;;
        --only) ONLY=${2:-}; shift 2; case "$ONLY" in run|test) ;; *) echo "fresh-check: --only must be run or test" >&2; exit 2;; esac;;
        --keep) KEEP=1; shift;;
        --no-cache) CACHE=0; shift;;
        --work) WORK=${2:?--work needs a directory}; shift 2;;
        -h|--help) sed -n '2,20p' "$0"; exit 0;;
        *) echo "fresh-check: unknown argument '$1'" >&2; usage;;
    esac
done
[ "$(id -u)" -eq 0 ] || { echo "fresh-check: must run as root (debootstrap, chroot, mounts)" >&2; exit 2; }
COMMIT=$(git -C "$REPO" rev-parse --verify "$REF^{commit}") || { echo "fresh-check: --ref $REF is not a commit of $REPO" >&2; exit 2; }

# --- the README's prerequisites, and where Debian comes from --------------------------------
PREREQS=python3,python3-venv,python3-pip,python3-dev,gcc,g++,make,git,ca-certificates
SUITE=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
MIRROR=$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
MIRROR=${MIRROR:-http://deb.debian.org/debian}
command -v debootstrap >/dev/null || "$REPO/scripts/apt-install.sh" test

mkdir -p "$WORK/logs"
BASE=$WORK/base
if [ "$CACHE" = 0 ] || [ ! -f "$BASE/.complete" ]; then
    rm -rf "$BASE"
    echo "fresh-check: debootstrap $SUITE from $MIRROR (minbase + $PREREQS) ..."
    t0=$(date +%s)
    debootstrap --variant=minbase --include="$PREREQS" "$SUITE" "$BASE" "$MIRROR" >"$WORK/logs/debootstrap.log" 2>&1 \
        || { tail -20 "$WORK/logs/debootstrap.log" >&2; echo "fresh-check: debootstrap failed (log: $WORK/logs/debootstrap.log)" >&2; exit 1; }
    rm -rf "$BASE"/var/cache/apt/archives/*.deb
    touch "$BASE/.complete"
    echo "fresh-check: base root built in $(( $(date +%s) - t0 )) s"
fi

STAMP=$(date +%Y%m%d-%H%M%S)
ROOTFS=$WORK/root-$STAMP
LOGS=$WORK/logs/$STAMP
mkdir -p "$LOGS"
cleanup() { [ "$KEEP" = 1 ] && echo "fresh-check: root kept in $ROOTFS" || rm -rf "$ROOTFS"; }
trap cleanup EXIT
cp -a "$BASE" "$ROOTFS"
rm -f "$ROOTFS/.complete"

# --- the host's package configuration --------------------------------------------------------
copy() { [ -e "$1" ] || return 0; mkdir -p "$ROOTFS$(dirname "$1")"; cp -a "$1" "$ROOTFS$1"; }
rm -f "$ROOTFS/etc/apt/sources.list"
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources /etc/apt/apt.conf.d/*; do
    [ -f "$f" ] && copy "$f"
done
copy /etc/resolv.conf
copy /etc/hosts
PIP_FILES=$(pip config debug 2>/dev/null | sed -n 's/^ *\(\/[^,]*\), exists: True$/\1/p' || true)
for f in $PIP_FILES /etc/npmrc /usr/etc/npmrc /root/.npmrc; do copy "$f"; done
# every local file or folder the pip configuration names: constraints copied, wheel folders
# and file:// indexes mounted read-only
BINDS=()
for v in $( (pip config list 2>/dev/null; env | grep '^PIP_') | sed "s/^[^=]*=//; s/'//g"); do
    p=${v#file://}
    case "$p" in /*) ;; *) continue;; esac
    # a file:// index's pages link to files beside it (PREFIX/simple -> PREFIX/files): mount PREFIX
    [ "$p" != "$v" ] && [ "$(basename "$p")" = simple ] && p=$(dirname "$p")
    if [ -d "$p" ]; then BINDS+=("$p"); elif [ -f "$p" ]; then copy "$p"; fi
done
ENVS=(HOME=/root LANG=C.UTF-8 TERM=dumb PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
      DEBIAN_FRONTEND=noninteractive CI=true)
while IFS= read -r line; do ENVS+=("$line"); done < <(env | grep -E '^(PIP_|UV_|NPM_CONFIG_|npm_config_)' || true)

git clone -q --no-hardlinks "$REPO" "$ROOTFS/root/esgd"
git -C "$ROOTFS/root/esgd" checkout -q "$COMMIT"
echo "fresh-check: $COMMIT in $ROOTFS (logs: $LOGS)"

# --- run one command inside the root, in its own mount and PID namespace ----------------------
inside() {  # inside NAME COMMAND: prints "NAME: exit S in T s"
    local name=$1 cmd=$2 t0 rc
    t0=$(date +%s)
    set +e
    unshare --mount --pid --fork --kill-child --propagation private bash -euc '
        R=$1; shift
        mount --bind "$R" "$R"          # the root is a mount point, as / is (ip netns needs it)
        mount -t proc proc "$R/proc"
        mount -t sysfs sysfs "$R/sys"
        mount --rbind /dev "$R/dev"
        mount -t tmpfs -o size=8g tmpfs "$R/dev/shm"
        mount -t tmpfs tmpfs "$R/run"
        chmod 1777 "$R/tmp"
        for b in $BINDS_LIST; do mkdir -p "$R$b"; mount --bind -o ro "$b" "$R$b"; mount -o remount,bind,ro "$R$b"; done
        exec chroot "$R" env -i "$@"' _ "$ROOTFS" "${ENVS[@]}" bash -lc "cd /root/esgd && $cmd" \
        >"$LOGS/$name.log" 2>&1
    rc=$?
    set -e
    echo "fresh-check: $name: exit $rc in $(( $(date +%s) - t0 )) s (log: $LOGS/$name.log)"
    [ $rc -eq 0 ] || tail -30 "$LOGS/$name.log" | sed 's/^/    /'
    return $rc
}
export BINDS_LIST="${BINDS[*]:-}"

status=0
if [ "$ONLY" != test ]; then inside make-run "make run" || status=1; fi
if [ "$ONLY" != run ]; then inside make-test "make test" || status=1; fi
[ "$ONLY" = test ] || grep -E "SUCCEEDED|FAILED" "$LOGS/make-run.log" | tail -1 | sed 's/^/fresh-check: make run: /' || true
[ "$ONLY" = run ] || grep -E "^[0-9]+ (passed|failed)|(passed|failed).* in [0-9.]+s" "$LOGS/make-test.log" | tail -1 | sed 's/^/fresh-check: make test: /' || true
exit $status
