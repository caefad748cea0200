"""Every system file or program the project uses is installed by the project.

scripts/apt-packages.txt is the one list of Debian packages the project needs. These tests
check it both ways:
- each listed path really comes from the listed package (``dpkg -S``), so the list cannot drift
  from what Debian ships;
- each system path or program the code references (an absolute /usr/... path, a program looked
  up with ``shutil.which``/``need_program``/``command -v`` or started by bare name) is on the
  list, so new code cannot depend on something a fresh machine lacks.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.installed import missing, need_program

ROOT = Path(__file__).resolve().parent.parent
LIST = ROOT / "scripts" / "apt-packages.txt"
GROUPS = {"run", "test", "compose"}
# The make target that installs each group: `make test` installs run + test; the compose group
# (Docker) only `make compose-check`, which .ci/run runs after `make test`.
INSTALLED_BY = {"run": "test-tools", "test": "test-tools", "compose": "compose-check"}
# Programs every Debian system has (Essential/required packages), or that the scripts use only
# when present (sudo), or that are the README's prerequisites (git, make, Python).
BASE_PROGRAMS = {"apt-get", "dpkg", "sudo", "bash", "sh", "env", "git", "make", "python3", "id",
                 "mount", "umount", "chroot", "tar", "cp", "rm", "sleep", "kill",
                 "nvidia-smi"}   # the NVIDIA driver's, on GPU hosts only (bench/gpu.sh)
SYSTEM_PATH = re.compile(r"(?<![\w.~])(/usr/(?:share|bin|sbin|lib)/[\w.+-]+(?:/[\w.+-]+)*|/s?bin/[\w.+-]+)")
PROGRAM = re.compile(r"""(?:shutil\.which|need_program)\(\s*["']([\w.+-]+)["']"""
                     r"""|subprocess\.\w+\(\s*\[\s*["']([\w.+-]+)["']"""
                     r"""|command -v ([\w.+-]+)""")
NOT_SYSTEM = {"/usr/bin/env", "/bin/bash", "/bin/sh"}   # shebangs


def entries() -> list[tuple[list[str], str, list[str]]]:
    out = []
    for line in LIST.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            pkgs, group, paths = line.split()
            out.append((pkgs.split("|"), group, paths.split(",")))
    return out


def listed_paths() -> dict[str, list[str]]:
    return {p: pkgs for pkgs, _, paths in entries() for p in paths}


def listed_groups() -> dict[str, str]:
    return {p: group for _, group, paths in entries() for p in paths}


def owner(path: str) -> str | None:
    """The package dpkg says provides ``path`` (trying the merged-/usr alias: dpkg records
    /sbin/ip where the file is /usr/sbin/ip)."""
    alias = path.removeprefix("/usr") if path.startswith(("/usr/bin/", "/usr/sbin/")) else "/usr" + path
    for candidate in (path, alias):
        r = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
        if r.returncode == 0:
            return r.stdout.split(":", 1)[0].split(",")[0].strip()
    return None


def referencing_files() -> list[Path]:
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    here = Path(__file__).relative_to(ROOT).as_posix()
    return [ROOT / f for f in tracked
            if (f.endswith((".py", ".sh")) or f == "Makefile") and f != here and not f.startswith("deploy/")
            and (ROOT / f).is_file()]


def test_the_list_is_well_formed():
    seen = set()
    for pkgs, group, paths in entries():
        assert group in GROUPS, f"{pkgs[0]}: group {group!r} (allowed: {sorted(GROUPS)})"
        assert all(p.startswith("/") for p in paths), f"{pkgs[0]}: paths must be absolute: {paths}"
        assert pkgs[0] not in seen, f"{pkgs[0]} is listed twice"
        seen.add(pkgs[0])
    assert {"dataset-fashion-mnist", "bible-kjv", "prometheus"} <= seen


@pytest.mark.parametrize("path", sorted(listed_paths()))
def test_each_listed_path_comes_from_its_package(path):
    need_program("dpkg")
    pkgs, group = listed_paths()[path], listed_groups()[path]
    if not Path(path).exists():
        if group == "compose":   # not a `make test` package: checked once compose-check installed it
            pytest.skip(f"{path} (Debian package {pkgs[0]}) is installed by `make compose-check`")
        missing(f"{path} (Debian package {pkgs[0]})", INSTALLED_BY[group])
    found = owner(path)
    assert found in pkgs, f"{path} is provided by {found or 'no package'}, not by {'|'.join(pkgs)} as scripts/apt-packages.txt says"


def test_every_system_path_and_program_the_code_references_is_listed():
    listed = listed_paths()
    names = {Path(p).name for p in listed}
    unlisted = []
    for f in referencing_files():
        text = f.read_text(errors="replace")
        for m in SYSTEM_PATH.finditer(text):
            ref = m.group(1).rstrip(".")
            if ref in NOT_SYSTEM:
                continue
            if not any(p == ref or p.startswith(ref + "/") or ref.startswith(p + "/") for p in listed):
                unlisted.append(f"{f.relative_to(ROOT)}: {ref}")
        for m in PROGRAM.finditer(text):
            prog = next(g for g in m.groups() if g)
            if prog not in names and prog not in BASE_PROGRAMS:
                unlisted.append(f"{f.relative_to(ROOT)}: program {prog}")
    assert not unlisted, "not in scripts/apt-packages.txt: " + "; ".join(sorted(set(unlisted)))


def test_the_scan_finds_what_the_code_uses():
    """The scan above is only as good as its patterns: it must see the known references."""
    found = set()
    for f in referencing_files():
        text = f.read_text(errors="replace")
        found |= {m.group(1) for m in SYSTEM_PATH.finditer(text)}
        found |= {next(g for g in m.groups() if g) for m in PROGRAM.finditer(text)}
    assert {"/usr/bin/bible", "/usr/share/datasets/fashion-mnist", "promtool", "prometheus", "npm"} <= found
