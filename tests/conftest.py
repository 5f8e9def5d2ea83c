"""Fixtures for every test: torch threads per xdist worker, the plan cache off, Hydra and logging state hygiene,
the packaged backbone names.
Shared helpers (specs, checkpoints) are in ``helpers.py``."""

from __future__ import annotations

import os

import pytest
import torch
from helpers import loggers_restored
from hydra.core.global_hydra import GlobalHydra

from featx.spec.config_files import backbone_names


def pytest_configure(config) -> None:
    """Under pytest-xdist (``-n N``) the workers share the machine's cores: each gets its share of torch threads
    (and so do the subprocesses it starts, through OMP_NUM_THREADS), so N workers do not run N x cores threads. The
    plan cache is off (for subprocesses too): every build plans, so the planner is what the suite tests, and nothing
    is written to the user's cache; tests/test_plan_cache.py turns it on in a temporary folder."""
    os.environ["FEATX_NO_CACHE"] = "1"
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        share = max(1, (os.cpu_count() or 1) // workers)
        torch.set_num_threads(share)
        os.environ.setdefault("OMP_NUM_THREADS", str(share))


@pytest.fixture(autouse=True)
def _clean_hydra():
    """No test sees another test's GlobalHydra."""
    GlobalHydra.instance().clear()
    yield
    GlobalHydra.instance().clear()


@pytest.fixture(autouse=True)
def _clean_logging():
    """No test sees the loggers another test's app run configured: Hydra's logging config (``hydra/job_logging=
    disabled`` in the in-process app tests) disables every existing logger and resets levels."""
    with loggers_restored():
        yield


@pytest.fixture(params=backbone_names())
def backbone_name(request) -> str:
    """Every packaged ``conf/backbone/*.yaml``."""
    return request.param
