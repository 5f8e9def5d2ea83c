"""featx-extract's ranks working as one (two CPU processes, gloo): a process group the caller started, ranks whose
weights differ (features of two networks in one folder), a failure on one rank stopping every rank, and torchrun's
environment checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Tuple

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torchvision
from helpers import folder_state
from PIL import Image

import featx
from featx.errors import ArgumentError, FeatxError
from featx.spec.apps import ExtractOptions
from featx.tasks.extract.run import extract

WORLD_SIZE = 2
#: the longest two ranks may take (a rank left waiting for one that stopped waits 30 minutes in gloo)
DEADLINE_S = 180


def _spec(weights: str) -> featx.BackboneSpec:
    return featx.load_spec("resnet18", overrides=["device=cpu", f"weights={weights}"])


def _options(source: Path, output: Path) -> ExtractOptions:
    return ExtractOptions(
        input=str(source), output=str(output), size=[64, 64], batch_size=2, workers=0, shard_size=2, progress=False
    )


def _extract_on_one_rank(rank: int, init_file: str, weights: List[str], source: str, output: str) -> None:
    """One rank of a run whose process group the caller starts (as mp.spawn users do; no WORLD_SIZE): its outcome,
    ("ok", files processed) or (error type, message), written to ``output``.rank<N>.json."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        try:
            summary = extract(_spec(weights[rank]), _options(Path(source), Path(output)))
            outcome: Tuple[str, object] = ("ok", summary.processed)
        except FeatxError as error:
            outcome = (type(error).__name__, str(error))
        Path(f"{output}.rank{rank}.json").write_text(json.dumps(outcome))
    finally:
        dist.destroy_process_group()


def _two_ranks(tmp_path: Path, weights: List[str], source: Path, output: Path) -> List[list]:
    """Each rank's outcome; fails the test (and kills the ranks) if they take longer than :data:`DEADLINE_S`."""
    args = (str(tmp_path / "init"), weights, str(source), str(output))
    context = mp.spawn(_extract_on_one_rank, args=args, nprocs=WORLD_SIZE, join=False)
    deadline = time.monotonic() + DEADLINE_S
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the ranks did not finish in {DEADLINE_S} s (one waits for another that stopped)")
    return [json.loads(Path(f"{output}.rank{rank}.json").read_text()) for rank in range(WORLD_SIZE)]


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(5):
        generator = torch.Generator().manual_seed(index)
        pixels = torch.randint(0, 256, (40, 48, 3), dtype=torch.uint8, generator=generator)
        Image.fromarray(pixels.numpy()).save(folder / f"{index}.png")
    return folder


def _weights(path: Path, seed: int) -> str:
    torch.manual_seed(seed)
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return str(path)


@pytest.mark.slow
def test_ranks_of_a_process_group_the_caller_started_split_the_files(tmp_path, photos):
    """Without WORLD_SIZE (mp.spawn, a group started with init_method=file://) the ranks took the run as one process
    each: rank 0 did every file, rank 1 stopped with "in use by another featx-extract run"."""
    weights = _weights(tmp_path / "w.pth", 0)
    outcomes = _two_ranks(tmp_path, [weights, weights], photos, tmp_path / "out")
    assert outcomes == [["ok", 5]] * WORLD_SIZE  # counted over the ranks
    stored = dict(featx.read_features(tmp_path / "out"))
    assert sorted(stored) == sorted(str(path) for path in photos.iterdir())
    shards = {path.name[:10] for path in (tmp_path / "out" / "featx-shards").iterdir()}
    assert shards == {"shard-r000", "shard-r001"}, shards


@pytest.mark.slow
def test_ranks_with_weights_of_other_content_are_refused_on_every_rank(tmp_path, photos):
    """Each node reads its own copy of a weights file; where the copies differ, the first run stored features of
    two networks in one folder (rank 0 recorded its own weights only) and read_features returned the mixture."""
    weights = [_weights(tmp_path / "w1.pth", 1), _weights(tmp_path / "w2.pth", 2)]
    outcomes = _two_ranks(tmp_path, weights, photos, tmp_path / "out")
    message = (
        "the ranks would store features of different networks: rank 1's settings differ from rank 0's (differing: "
        "backbone.weights_file); give every rank the same spec, weights (a weights file of the same content on each "
        "node) and transform"
    )
    assert outcomes == [["ArgumentError", message]] * WORLD_SIZE
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_failure_on_rank_0_stops_every_rank(tmp_path, photos):
    """Rank 0's listing failed (no image in the input) and rank 1 waited for the listing until gloo's timeout."""
    weights = _weights(tmp_path / "w.pth", 0)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no image")
    outcomes = _two_ranks(tmp_path, [weights, weights], empty, tmp_path / "out")
    message = f"extract.input: {str(empty)!r} holds no image files (1 other files)"
    assert outcomes == [["ArgumentError", message], ["ArgumentError", f"rank 0: {message}"]]


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ({"WORLD_SIZE": "abc"}, "WORLD_SIZE: 'abc' is not a whole number"),
        ({"WORLD_SIZE": "0"}, "WORLD_SIZE: 0 is below 1"),
        ({"WORLD_SIZE": "-1"}, "WORLD_SIZE: -1 is below 1"),
        ({"WORLD_SIZE": "2", "RANK": "2"}, r"RANK: 2 is not below WORLD_SIZE=2 \(ranks are 0 to 1\)$"),
        ({"WORLD_SIZE": "2", "RANK": "x"}, "RANK: 'x' is not a whole number"),
        ({"WORLD_SIZE": "2"}, r"RANK: not set, with WORLD_SIZE=2"),
        ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "-3"}, "LOCAL_RANK: -3 is below 0"),
        (
            {"WORLD_SIZE": "2", "RANK": "1", "MASTER_PORT": "29500"},
            r"MASTER_ADDR: not set, with WORLD_SIZE=2: run under torchrun",
        ),
        ({"WORLD_SIZE": "1_0", "RANK": "0"}, "WORLD_SIZE: '1_0' is not a whole number"),
        ({"WORLD_SIZE": "4", "RANK": "\u0663"}, "RANK: '\u0663' is not a whole number"),
        ({"WORLD_SIZE": "2", "RANK": "+1"}, r"RANK: '\+1' is not a whole number"),
        ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "\uff10"}, "LOCAL_RANK: '\uff10' is not a whole number"),
        (
            {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "notaport"},
            r"MASTER_PORT: 'notaport' is not a port: a whole number from 1 to 65535 \(torchrun sets it from "
            r"--master_port; unset WORLD_SIZE to extract in one process\)$",
        ),
        (
            {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "99999"},
            r"MASTER_PORT: 99999 is not a port: a whole number from 1 to 65535 \(torchrun",
        ),
    ],
)
def test_torchruns_variables_are_checked_before_the_process_group_starts(
    tmp_path, photos, monkeypatch, environment, message
):
    """torch answered WORLD_SIZE=abc with int()'s ValueError, RANK=2 of 2 with a raw gloo traceback (rank 0 then
    waited for ever), and a missing MASTER_ADDR with a message cut before its name. int() took WORLD_SIZE=1_0 as 10
    and other scripts' digits (an Arabic-Indic 3) as numbers; MASTER_PORT=notaport or 99999 got torch's ValueError
    without the variable's name."""
    for variable in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(variable, raising=False)
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)
    before = folder_state(tmp_path)
    with pytest.raises(ArgumentError, match=f"^{message}"):
        extract(featx.load_spec("resnet18", overrides=["device=cpu"]), _options(photos, tmp_path / "out"))
    assert folder_state(tmp_path) == before
    assert not dist.is_initialized()


@pytest.mark.parametrize(("port", "shown"), [("0", "0"), ("2\u0669500", "'2\u0669500'")])
def test_a_master_port_no_rank_can_reach_is_refused_at_once(tmp_path, photos, port, shown):
    """MASTER_PORT=0 (torch takes it: rank 0 binds any free port, which no other rank can know) and a port written
    with another script's digit (int() reads 2\u0669500 as 29500) left rank 1 waiting for rank 0 for gloo's 30
    minutes. Run as featx-extract in a process of its own, which the timeout stops where it waits."""
    environment = {name: value for name, value in os.environ.items() if name != "LOCAL_RANK"}
    environment.update(WORLD_SIZE="2", RANK="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    output = tmp_path / "out"
    command = [sys.executable, "-m", "featx.cli.extract", "backbone=resnet18", "backbone.device=cpu"]
    command += [f"extract.input={photos}", f"extract.output={output}", "extract.size=[64,64]"]
    done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == (
        f"featx-extract: error: MASTER_PORT: {shown} is not a port: a whole number from 1 to 65535 (torchrun sets "
        "it from --master_port; unset WORLD_SIZE to extract in one process)"
    )
    assert not output.exists()


@pytest.mark.parametrize("rank", ["0", "1"])
def test_rank_zero_alone_writes_hydras_record_in_a_shared_run_folder(tmp_path, photos, rank):
    """The ranks of one launch given one hydra.run.dir: rank 1, checking the folder between rank 0's writes of
    .hydra/config.yaml and .hydra/hydra.yaml, took rank 0's half-written record for a stranger's file and stopped
    the launch ("exists and is no record of a featx run"; seen once in CI). Rank 1 now leaves Hydra's record to rank
    0 (its run stops here at the missing MASTER_ADDR, after Hydra's writes); rank 0 still refuses to replace it."""
    run_folder = tmp_path / "run"
    (run_folder / ".hydra").mkdir(parents=True)
    (run_folder / ".hydra" / "config.yaml").write_text("rank 0's, hydra.yaml not written yet\n")
    environment = {name: value for name, value in os.environ.items() if name not in ("LOCAL_RANK", "MASTER_ADDR")}
    environment.update(WORLD_SIZE="2", RANK=rank, MASTER_PORT="29500")
    command = [sys.executable, "-m", "featx.cli.extract", "backbone=resnet18", "backbone.device=cpu"]
    command += [f"extract.input={photos}", f"extract.output={tmp_path / 'out'}", f"hydra.run.dir={run_folder}"]
    done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    if rank == "1":
        assert last.startswith("featx-extract: error: MASTER_ADDR: not set, with WORLD_SIZE=2: run under torchrun")
        assert sorted(path.name for path in run_folder.rglob("*")) == [".hydra", "config.yaml", "extract.log"]
    else:
        assert last == (
            f"featx-extract: error: {run_folder / '.hydra' / 'config.yaml'} exists and is no record of a featx run, "
            "and Hydra would replace it with this run's config.yaml; give another folder with hydra.run.dir / "
            "hydra.sweep.dir"
        )
        assert sorted(path.name for path in run_folder.rglob("*")) == [".hydra", "config.yaml"]
    assert (run_folder / ".hydra" / "config.yaml").read_text() == "rank 0's, hydra.yaml not written yet\n"
