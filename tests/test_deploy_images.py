"""The deployment's images: deploy/Dockerfile (esgd), and the offline Prometheus and base images.

Fast and offline: nothing is built; the Dockerfiles, their helper scripts and .dockerignore are
read (and deploy/trim-venv.sh checked with `sh -n`). docker-compose.yml is
tests/test_deploy_compose.py; Prometheus and Grafana, tests/test_deploy_monitoring.py.
"""
from __future__ import annotations

import re
import subprocess

from tests.deploy_files import DEPLOY, ROOT


def test_dockerfile():
    text = (DEPLOY / "Dockerfile").read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.M | re.I), "no registry frontend: builds must work offline"
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim-bookworm$", text, re.M)
    assert re.search(r"^ARG TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cpu$", text, re.M)
    for arg in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "CA_CERTS"):  # package access
        assert re.search(rf"^ARG {arg}=$", text, re.M), arg
    assert "dataset-fashion-mnist" in text and "bible-kjv" in text
    assert 'pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"' in text
    # exactly the runtime dependencies: project.dependencies, never an optional extra
    assert "['project']['dependencies']" in text and "optional-dependencies" not in text
    # the trim, then the check that the trimmed runtime still works: pip check (the packages removed
    # on purpose aside), imports, a real job and a real Tune sweep
    assert "pip install --no-deps ." in text
    assert re.search(r"^COPY deploy/trim-venv\.sh deploy/$", text, re.M) and "sh deploy/trim-venv.sh " in text
    assert re.search(r"^\s*python deploy/smoke-check\.py$", text, re.M)
    smoke = (DEPLOY / "smoke-check.py").read_text()
    assert '"pip", "check"' in smoke and "run_sweep(" in smoke and '"--flatness"' in smoke
    assert subprocess.run(["sh", "-n", str(DEPLOY / "trim-venv.sh")]).returncode == 0
    # two stages: the runtime gets the built venv, not the build's CA bundle or pip settings
    stages = re.split(r"^FROM ", text, flags=re.M)
    assert len(stages) == 4 and stages[2].startswith("base AS build") and stages[3].startswith("base\n")
    runtime = stages[3]
    assert "COPY --from=build /opt/venv /opt/venv" in runtime
    assert "CA_CERTS" not in runtime and "PIP_" not in runtime
    assert re.search(r"^ARG ESGD_UID=([1-9]\d*)$", text, re.M)    # non-root
    assert re.search(r"^USER \$\{ESGD_UID\}:\$\{ESGD_UID\}$", text, re.M)
    assert re.search(r"^EXPOSE 50051 9464 6379 8265 8080$", text, re.M)
    assert re.search(r'^CMD \["esgd", "serve", "--help"\]$', text, re.M)
    assert not re.search(r"^ENTRYPOINT", text, re.M)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "runs", "esgd-data", ".git", "__pycache__", "node_modules"} <= set(ignored)


def test_offline_images_need_no_registry_frontend():
    """scripts/compose-check.sh's other images: Debian's Prometheus, and its debootstrapped base."""
    for path in (DEPLOY / "prometheus" / "Dockerfile", DEPLOY / "base" / "Dockerfile"):
        text = path.read_text()
        assert not re.search(r"^#\s*syntax\s*=", text, re.M | re.I), path
        assert re.search(r"^FROM \$\{(BASE_IMAGE|ROOTFS_IMAGE)\}$", text, re.M), path
    prom = (DEPLOY / "prometheus" / "Dockerfile").read_text()
    assert "apt-get install -y --no-install-recommends prometheus wget" in prom  # wget: the healthcheck
    assert re.search(r'^ENTRYPOINT \["/usr/bin/prometheus"\]$', prom, re.M)
