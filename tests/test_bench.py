"""scripts/bench.py's measuring parts: the goal cell, medians, and the child process that times one build with every
import done before the clock (docs/results.md says imports are excluded; featx's lazy modules were timed)."""

from __future__ import annotations

from types import ModuleType

import pytest
import torch
import torchvision
from helpers import load_script


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_script("bench")


def test_the_goal_cell_says_met_only_at_or_below_the_bound(bench):
    assert bench._goal(0.4, 0.5) == "<= 0.5: met"
    assert bench._goal(0.5, 0.5) == "<= 0.5: met"
    assert bench._goal(0.51, 0.5) == "<= 0.5: not met"
    assert bench._goal(3.0, None) == "-"


def test_medians_are_per_key(bench):
    samples = [{"seconds": 3.0, "peak_mib": 1.0}, {"seconds": 1.0, "peak_mib": 9.0}, {"seconds": 2.0, "peak_mib": 5.0}]
    assert bench._medians(samples) == {"seconds": 2.0, "peak_mib": 5.0}


@pytest.mark.parametrize("kind", ["torchvision + weights", "featx + weights", "inspect", "read checkpoint"])
def test_a_measurement_imports_nothing_while_timed(bench, kind, tmp_path):
    """The child refuses a measurement during which a module was imported (featx's build imported 39 of its own
    modules, and safetensors, inside the timed region while torchvision's were imported before it)."""
    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    measured = bench._child(kind, "resnet18", "resnet18", weights)
    assert set(measured) == {"seconds", "peak_mib"} and measured["seconds"] > 0


def test_the_json_replaces_only_a_file_bench_wrote(bench, tmp_path, monkeypatch, capsys):
    """--json (default: a fixed name in $TMPDIR) was written with write_text: it replaced any file, wrote through a
    link planted at that name, and did so before --output's refusal said "nothing was written"."""
    notes, link, own = tmp_path / "notes.txt", tmp_path / "link.json", tmp_path / "bench.json"
    notes.write_text("my notes\n")
    link.symlink_to(notes)
    for path in (notes, link, tmp_path):  # refused before any measurement
        monkeypatch.setattr("sys.argv", ["bench.py", "--sections", "inspect", "--json", str(path)])
        with pytest.raises(SystemExit) as refused:
            bench.main()
        assert refused.value.code == 2
        refusal = f"--json: {path} exists and is not a file this script wrote; nothing was written: give another path"
        assert capsys.readouterr().err.strip().endswith(f"bench.py: error: {refusal}, or move that file")
    assert notes.read_text() == "my notes\n"
    bench._write_json(own, {"forward": []})
    bench._write_json(own, {"forward": [1]})  # its own file: replaced
    assert bench._is_own_json(own) and '"forward": [\n    1\n  ]' in own.read_text()
    with pytest.raises(SystemExit, match=r"--json: .*notes\.txt exists"):
        bench._write_json(notes, {"forward": []})
    assert notes.read_text() == "my notes\n"


#: bench_extract arguments for a run of seconds: a refusal that comes after the passes fails fast
TINY_RUN = ["--images", "1", "--workers", "0", "--size", "32"]
#: the same for bench: one forward timing of each backbone at 32x32
TINY_BENCH = ["--sections", "forward", "--batches", "1", "--size", "32", "--repeats", "1", "--warmup", "0"]
NO_CUDA = "'cuda:99' is not available on this machine (no CUDA device); use 'cpu' or 'auto'"
TOO_FEW = f"'cuda:99' is not available: this machine has {torch.cuda.device_count()} CUDA device(s)"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [  # the devices were a traceback (SpecError, DeviceError, torch's) after checkpoints were written and built
        (
            ["--device", "foo"],
            "argument --device: backbone.device: unknown device 'foo' (valid: auto, cpu, cuda, cuda:N, mps, meta)",
        ),
        (
            ["--device", "cuda:99"],
            f"argument --device: backbone.device: {TOO_FEW if torch.cuda.is_available() else NO_CUDA}",
        ),
        (["--device", "auto"], "argument --device: the rows run on cpu or cuda[:N], named; got 'auto'"),
        (["--device", "meta"], "argument --device: the rows run on cpu or cuda[:N], named; got 'meta'"),
        # featx's spec takes it, the rows' torch.device("cpu ") did not: a traceback after the work
        (["--device", "cpu "], "argument --device: write it as 'cpu', not 'cpu '"),
        # refused after every measurement
        (
            ["--output", "{notes}"],
            "--output: {notes} exists and is not a page this script wrote (its first line is not '# Benchmark results "
            "(generated)'); nothing was written: give another path, or move that file",
        ),
    ],
)
def test_bench_refuses_bad_arguments_before_any_work(bench, arguments, message, tmp_path, monkeypatch, capsys):
    notes = tmp_path / "notes.md"
    notes.write_text("my page\n")
    given = [argument.format(notes=notes) for argument in arguments]
    monkeypatch.setattr("sys.argv", ["bench.py", *TINY_BENCH, "--json", str(tmp_path / "bench.json"), *given])
    with pytest.raises(SystemExit) as refused:
        bench.main()
    assert refused.value.code == 2
    assert capsys.readouterr().err.strip().endswith(f"bench.py: error: {message.format(notes=notes)}")
    assert sorted(tmp_path.iterdir()) == [notes] and notes.read_text() == "my page\n"


@pytest.mark.parametrize(
    ("script", "arguments", "message"),
    [  # each went on to minutes of work, then a raw traceback (statistics, the DataLoader, a KeyError)
        ("bench", ["--repeats", "0"], "argument --repeats: 0 is not in 1..1000"),
        ("bench", ["--build-repeats", "0"], "argument --build-repeats: 0 is not in 1..1000"),
        ("bench", ["--batches", "1", "0"], "argument --batches: 0 is not in 1..256"),
        ("bench_extract", ["--workers", "-1"], "argument --workers: -1 is not in 0..256"),
        ("bench_extract", ["--images", "10**9"], "argument --images: '10**9' is not a whole number"),
        ("bench_extract", ["--batch-size", "0"], "argument --batch-size: 0 is not in 1..4096"),
        # a raw traceback from torch.device or get_model after the JPEGs were written (a small run: see TINY_RUN)
        (
            "bench_extract",
            [*TINY_RUN, "--device", "gpu"],
            "argument --device: backbone.device: unknown device 'gpu' (valid: auto, cpu, cuda, cuda:N, mps, meta)",
        ),
        (
            "bench_extract",
            [*TINY_RUN, "--device", "auto"],
            "argument --device: the rows run on cpu or cuda[:N], named; got 'auto'",
        ),
        (
            "bench_extract",
            [*TINY_RUN, "--device", "meta"],
            "argument --device: the rows run on cpu or cuda[:N], named; got 'meta'",
        ),
        ("bench_extract", [*TINY_RUN, "--device", "'cpu'"], "argument --device: write it as 'cpu', not \"'cpu'\""),
        (
            "bench_extract",
            [*TINY_RUN, "--backbone", "vgg16", "--device", "cpu"],
            "argument --backbone: 'vgg16' builds 'vgg16'; the hand-written loop takes layer4 of a torchvision ResNet: "
            "give a packaged spec of one with a c5 stage, e.g. resnet50 or resnext50_32x4d",
        ),
    ],
)
def test_the_benchmarks_refuse_bad_arguments_before_any_work(script, arguments, message, monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", [f"{script}.py", *arguments])
    with pytest.raises(SystemExit) as refused:
        load_script(script).main() if script == "bench" else load_script(script).main(arguments)
    assert refused.value.code == 2
    assert capsys.readouterr().err.strip().endswith(f"{script}.py: error: {message}")


def test_bench_extract_refuses_an_unknown_backbone_and_a_users_output_before_any_work(tmp_path, monkeypatch, capsys):
    """An unknown --backbone was a raw traceback; a file of the user's at --output was refused after every pass."""
    bench_extract = load_script("bench_extract")
    monkeypatch.setattr("sys.argv", ["bench_extract.py"])  # argparse's program name
    with pytest.raises(SystemExit) as refused:
        bench_extract.main(["--backbone", "resnet5", "--device", "cpu"])
    assert refused.value.code == 2
    unknown = (
        "bench_extract.py: error: argument --backbone: backbone: unknown backbone 'resnet5'; did you mean resnet50"
    )
    assert unknown in capsys.readouterr().err
    notes = tmp_path / "notes.md"
    notes.write_text("my notes\n")
    with pytest.raises(SystemExit) as refused:
        bench_extract.main([*TINY_RUN, "--device", "cpu", f"--output={notes}"])
    assert refused.value.code == 2  # argparse's refusal, before the passes (after them it was exit status 1)
    refusal = (
        f"bench_extract.py: error: --output: {notes} exists and is not a page this script wrote (its first line is "
        "not '# Extraction throughput (generated)'); nothing was written: give another path, or move that file"
    )
    assert capsys.readouterr().err.strip().endswith(refusal)
    assert notes.read_text() == "my notes\n"
