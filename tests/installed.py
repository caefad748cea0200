"""What a test needs from the machine, and what happens when it is missing.

Everything a test needs is installed by the project (``make test`` runs ``make test-tools``:
scripts/apt-packages.txt and deploy/grafana/schema-check). So a missing file or program is an
installation bug, never a reason to pass quietly: under CI (``CI=true``, set by ``.ci/run``) the
test fails; on a developer's machine it skips with the make target that installs the thing.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(what: str, target: str) -> None:
    """Fail (CI) or skip (elsewhere), naming ``what`` and the make target that installs it."""
    message = f"{what} is missing: `make {target}` installs it (scripts/apt-packages.txt)"
    if in_ci():
        pytest.fail(message + " - CI=true, so this is a failure, not a skip", pytrace=False)
    pytest.skip(message)


def need_path(path: str | Path, target: str = "test-tools") -> Path:
    """``path`` must exist (a dataset folder, a program by absolute path)."""
    if not Path(path).exists():
        missing(str(path), target)
    return Path(path)


def need_program(name: str, target: str = "test-tools") -> str:
    """``name`` must be on PATH; returns its full path."""
    found = shutil.which(name)
    if not found:
        missing(f"the program `{name}`", target)
    return found
