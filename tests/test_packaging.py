"""A non-editable install ships conf/ inside the package and the app finds it from anywhere."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from featx.construct.plan_cache import PACKAGED_PLANS
from featx.spec.config_files import backbone_names

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    (path,) = out.glob("featx-*.whl")
    return path


@pytest.mark.slow
def test_wheel_ships_every_config(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"featx/conf/config.yaml", "featx/conf/export.yaml", "featx/conf/extract.yaml"} <= names
    assert {f"featx/conf/backbone/{name}.yaml" for name in backbone_names()} <= names
    assert {f"featx/plans/{path.name}" for path in PACKAGED_PLANS.glob("*.json")} <= names


@pytest.mark.slow
def test_installed_wheel_builds_by_name_and_runs_the_app(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    cache = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(target), "TMPDIR": str(tmp_path), "FEATX_CACHE_DIR": str(cache)}
    env.pop("FEATX_NO_CACHE")
    probe = (
        "import featx, featx.spec.config_files as r; "
        "print(r.config_dir()); print(featx.__file__); "
        "print(featx.build('resnet34', overrides=['device=cpu']).out_channels)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    config, module, channels = result.stdout.split()
    assert Path(config) == target / "featx" / "conf" and Path(module).is_relative_to(target) and channels == "256"
    assert not cache.exists()  # the plan shipped in the wheel was used: nothing planned, nothing cached
    app = subprocess.run(
        [sys.executable, "-m", "featx", "backbone=resnet34", "input.height=64", "input.width=64"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert app.returncode == 0, app.stderr
    assert app.stdout.startswith("featx backbone=resnet34 (resnet34)")
    assert list(cwd.iterdir()) == []
