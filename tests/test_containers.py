"""The image built and the stack run, for real: `scripts/container_check.sh` under pytest.

It builds the image (on a base made from Debian packages where none can be pulled), runs
the compose stack on the embedded broker with 3 workers and the console, publishes 5,000
claims, SIGKILLs a worker mid-stream, and checks every claim in Redis and on
`claims.scored` (docs/operations.md, "The container check"). About 3 minutes here with
the images built, 4.5 building them, so it runs only when asked for:

    .venv/bin/pytest -m container

Skipped, with the reason, where podman is missing or this is not root (rootful podman:
the host reaches the broker at its container address).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.container


def test_container_check_keeps_every_claim_through_a_killed_worker(
        request: pytest.FixtureRequest, tmp_path: Path) -> None:
    if "container" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("the container check takes minutes: run it with `pytest -m container`")
    if not shutil.which("podman"):
        pytest.skip("podman is not installed (Debian: apt-get install podman runc; "
                    "scripts/container_check.sh installs the rest)")
    if os.geteuid() != 0:
        pytest.skip("the container check needs root (rootful podman)")
    r = subprocess.run(["bash", "scripts/container_check.sh"], cwd=ROOT, text=True,
                       env={**os.environ, "CHECK_LOG_DIR": str(tmp_path)},
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=3000)
    assert r.returncode == 0, r.stdout[-6000:]
    assert "5000/5000 claims in Redis and on claims.scored" in r.stdout, r.stdout[-3000:]
    left = subprocess.run(["podman", "ps", "-q", "--filter",
                           "label=com.docker.compose.project=claimscope-check"],
                          capture_output=True, text=True).stdout.split()
    assert not left, f"containers left running: {left}"
