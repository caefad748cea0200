#!/usr/bin/env bash
# Install the Debian packages of scripts/apt-packages.txt in the given groups (run, test, compose).
# Idempotent and quick when everything is there: a line whose paths all exist installs nothing.
# Fails (exit 1) naming the package when it cannot install one: a missing package must never
# turn into a skipped test later.
#   scripts/apt-install.sh run          # what `make run` needs
#   scripts/apt-install.sh run test     # what `make test` needs
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || { echo "usage: scripts/apt-install.sh GROUP... (run, test, compose)" >&2; exit 2; }
for g in "$@"; do
    case "$g" in run|test|compose) ;; *) echo "apt-install: unknown group '$g' (allowed: run, test, compose)" >&2; exit 2;; esac
done

missing=()      # packages to install
while read -r pkgs group paths _; do
    case "$pkgs" in ''|'#'*) continue;; esac
    wanted=0
    for g in "$@"; do [ "$g" = "$group" ] && wanted=1; done
    [ "$wanted" = 1 ] || continue
    have=1
    IFS=, read -ra files <<<"$paths"
    for f in "${files[@]}"; do [ -e "$f" ] || have=0; done
    [ "$have" = 1 ] || missing+=("${pkgs%%|*}")
done < scripts/apt-packages.txt

[ ${#missing[@]} -eq 0 ] && exit 0
echo "apt-install: installing ${missing[*]} (scripts/apt-packages.txt) ..."
if ! command -v apt-get >/dev/null 2>&1; then
    echo "apt-install: no apt-get on this machine: install the Debian packages ${missing[*]} (or their files, see scripts/apt-packages.txt)" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "apt-install: not root and no sudo: as root run  apt-get install ${missing[*]}" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
    echo "apt-install: apt-get install ${missing[*]} failed" >&2
    exit 1
fi
