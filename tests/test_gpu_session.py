"""scripts/gpu_session.sh: the one command a session lent a GPU runs (its CUDA steps run only there)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu_session.sh"


def _run(*arguments: str, script: Path = SCRIPT, **variables: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, **variables}
    return subprocess.run(["bash", str(script), *arguments], capture_output=True, text=True, env=env, timeout=120)


def _checkout_copy(folder: Path) -> Path:
    """The package, its configs and scripts copied to ``folder`` (a run links featx/conf there, not in this tree)."""
    for name in ("featx", "conf", "scripts"):
        shutil.copytree(SCRIPT.parents[1] / name, folder / name, ignore=shutil.ignore_patterns("__pycache__"))
    return folder / "scripts" / "gpu_session.sh"


def test_prepare_copies_the_packages_the_device_image_lacks(tmp_path):
    site = tmp_path / "site"
    done = _run("--prepare", GPU_SITE=str(site))
    assert done.returncode == 0, done.stderr
    assert sorted(path.name for path in site.iterdir()) == ["antlr4", "hydra", "omegaconf"]
    assert not list(site.rglob("__pycache__"))
    # the folder first on the path: Hydra's grammar parser, OmegaConf and ANTLR come from it, whole
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import hydra.core.override_parser.overrides_parser as p, "
        "omegaconf, antlr4; print(p.__file__, omegaconf.__file__, antlr4.__file__)"
    )
    found = subprocess.run([sys.executable, "-c", code, str(site)], capture_output=True, text=True).stdout.split()
    assert len(found) == 3 and all(path.startswith(str(site)) for path in found), found


def test_a_run_needs_the_prepared_folder(tmp_path):
    done = _run(GPU_SITE=str(tmp_path / "missing"), OUT=str(tmp_path / "out"))
    assert done.returncode == 2
    assert "run 'bash scripts/gpu_session.sh --prepare' here" in done.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the script runs its whole checks")
def test_without_cuda_a_run_stops_after_recording_the_versions(tmp_path):
    site, out = tmp_path / "site", tmp_path / "out"
    assert _run("--prepare", GPU_SITE=str(site)).returncode == 0
    script = _checkout_copy(tmp_path / "checkout")
    done = _run(script=script, GPU_SITE=str(site), OUT=str(out))
    assert done.returncode == 1
    assert "no CUDA: these checks need the lent GPU" in done.stdout
    versions = (out / "versions.log").read_text()
    assert f"torch {torch.__version__}" in versions and "hydra 1.3" in versions and "cuda False" in versions
    assert sorted(path.name for path in out.iterdir()) == ["versions.log"]  # no later step ran
    copy = tmp_path / "checkout"  # its package and configs were the ones used, through the run's link
    assert f"featx {copy / 'featx' / '__init__.py'} configs {copy / 'featx' / 'conf'}" in versions
    assert not (copy / "featx" / "conf").exists()  # the link is gone again
