"""scripts/retrieval.py: views written as files, featx-extract run on them, recall and a linear probe on the
features read back; the recall is recomputed here by brute force from the stored features."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import ModuleType

import pytest
import torch
from helpers import load_script
from PIL import Image

import featx

PHOTOS = ["astronaut", "coins", "rocket"]
VIEWS = 6


@pytest.fixture(scope="module")
def retrieval() -> ModuleType:
    """scripts/retrieval.py as a module (its ``main`` is not run), imported as the script imports its neighbours."""
    return load_script("retrieval")


@pytest.fixture(scope="module")
def tiny_run(retrieval, tmp_path_factory):
    """3 photos x 6 views of 64 x 64, resnet18: the output folder and the returned rows (the summary page is
    written beside it, as ``page.md``)."""
    output = tmp_path_factory.mktemp("retrieval") / "out"
    page = output.parent / "page.md"
    arguments = [str(output), f"--photos={','.join(PHOTOS)}", f"--views={VIEWS}", "--size=64", f"--summary-page={page}"]
    rows = retrieval.main(arguments)
    return output, rows


def test_the_summary_page_names_the_command_and_holds_the_table(tiny_run):
    output, _ = tiny_run
    page = (output.parent / "page.md").read_text()
    assert page.startswith("# Retrieval results (generated)\n\nWritten by `python scripts/retrieval.py ")
    assert page.endswith((output / "results.md").read_text()) and "| resnet18 | c5 | 512 | 18 |" in page


def test_the_summary_pages_command_quotes_arguments_as_a_shell_reads_them(retrieval):
    """A path with a space was written bare: the command the page says to rerun split it in two."""
    page = retrieval.summary_page("| table |\n", ["out", "--summary-page=my docs/page.md", "--photos=it's"])
    assert (
        "Written by `python scripts/retrieval.py out '--summary-page=my docs/page.md' '--photos=it'\"'\"'s'` on "
        in page
    )


def test_views_are_files_one_folder_per_photo(tiny_run):
    output, _ = tiny_run
    assert sorted(path.name for path in (output / "images").iterdir()) == PHOTOS
    for photo in PHOTOS:
        files = sorted((output / "images" / photo).iterdir())
        assert [path.name for path in files] == [f"{index:03d}.png" for index in range(VIEWS)]
        assert Image.open(files[0]).size == (64, 64)


def cosine(a, b) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_recall_matches_a_brute_force_count_over_the_stored_features(tiny_run):
    output, rows = tiny_run
    stored = list(featx.read_features(output / "features" / "resnet18"))
    assert len(stored) == len(PHOTOS) * VIEWS
    vectors = [features["c5"].tolist() for _, features in stored]  # resnet18's deepest output
    photos = [Path(path).parent.name for path, _ in stored]
    expected = {}
    for k in (1, 5):
        hits = 0
        for query in range(len(vectors)):
            others = sorted(
                (index for index in range(len(vectors)) if index != query),
                key=lambda index: -cosine(vectors[query], vectors[index]),
            )
            hits += any(photos[index] == photos[query] for index in others[:k])
        expected[k] = hits / len(vectors)

    (row,) = rows
    assert row["backbone"] == "resnet18" and row["output"] == "c5" and row["dim"] == 512
    assert row["images"] == len(PHOTOS) * VIEWS
    assert row["recall@1"] == pytest.approx(expected[1]) and row["recall@5"] == pytest.approx(expected[5])
    for key in ("probe_train_acc", "probe_test_acc"):  # 3 views per photo in each half: multiples of 1/9
        assert 0 <= row[key] <= 1 and row[key] * 9 == pytest.approx(round(row[key] * 9))
    assert json.loads((output / "results.json").read_text()) == rows
    table = (output / "results.md").read_text().splitlines()
    assert table[0].startswith("| backbone | output | dim | images | recall@1 | recall@5 |")
    assert table[2].startswith(f"| resnet18 | c5 | 512 | 18 | {expected[1]:.3f} | {expected[5]:.3f} |")


def test_the_probe_learns_a_separable_problem_and_is_scored_on_the_test_half(retrieval):
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(40) % 4
    features = torch.nn.functional.one_hot(labels, 4).float() * 3 + 0.1 * torch.randn(40, 4, generator=generator)
    train, test = (features[:20], labels[:20]), (features[20:], labels[20:])
    assert retrieval.linear_probe(train, test, 4) == (1.0, 1.0)
    # the same features with every test label moved to the next class: the probe is right on none of them
    wrong = (features[20:], (labels[20:] + 1) % 4)
    assert retrieval.linear_probe(train, wrong, 4) == (1.0, 0.0)
    # a quarter of the test labels unchanged: exactly those are right
    quarter = (features[20:], torch.where(torch.arange(20) % 4 == 0, labels[20:], (labels[20:] + 1) % 4))
    assert retrieval.linear_probe(train, quarter, 4) == (1.0, 0.25)


def test_recall_at_on_a_worked_example(retrieval):
    vectors = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.15, 0.9], [0.7, 0.7]])
    labels = torch.tensor([0, 1, 1, 0, 0])
    # cosine-nearest others, by hand: 0 -> 1, 4;  1 -> 0, 4;  2 -> 3, 4;  3 -> 2, 4;  4 -> 3, 1
    # same label at k = 1: only 4 (-> 3); within k = 2: 0 (4), 3 (4), 4 (3)
    assert retrieval.recall_at(vectors, labels, (1, 2)) == pytest.approx({1: 1 / 5, 2: 3 / 5})


#: a run of seconds: a refusal that comes after the work fails fast
TINY = ["--views=4", "--size=32", "--photos=astronaut,camera"]
PACKAGED = "(featx-list lists the packaged ones; a backbone of your own needs hydra.searchpath=[file://FOLDER])"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--photos=astronaut"], "--photos: need 2 or more distinct names from astronaut, "),
        (["--photos=astronaut,eagle"], "--photos: need 2 or more distinct names from astronaut, "),
        # the second folder of one photo was a FileExistsError traceback, after the first photo's views
        (["--photos=astronaut,astronaut,camera"], "--photos: astronaut is named twice; give each photo once"),
        (["--views=3"], "argument --views: 3 is not in 4..1000"),
        (["--views=100000000"], "argument --views: 100000000 is not in 4..1000"),  # was accepted: 1e8 PNGs each
        (["--views=4.5"], "argument --views: '4.5' is not a whole number"),
        (["--size=8"], "argument --size: 8 is not in 32..1024"),
        # an OverflowError traceback from torch's generator
        (["--seed=100000000000000000000000"], f"argument --seed: {10**23} is not in 0..{2**63 - 1}"),
        (["--seed=-1"], f"argument --seed: -1 is not in 0..{2**63 - 1}"),
        # a typo in the second backbone was found after the first backbone's extraction, in a folder no rerun takes
        ([*TINY, "--backbones=resnet18,resnet81"], "--backbones: unknown backbone 'resnet81'; did you mean resnet18"),
        ([*TINY, "--backbones=resnet18,"], f"--backbones: unknown backbone '' {PACKAGED}"),
        ([*TINY, "--backbones=resnet18,resnet18"], "--backbones: resnet18 is named twice; give each backbone once"),
        # featx-extract took the last backbone=: the row named resnet18 held resnet50's features
        (
            [*TINY, "backbone=resnet50"],
            "overrides: backbone=resnet50 sets a key this script sets itself (backbone, extract.input, extract.output, "
            "extract.size, hydra.run.dir) or the backbone's model (backbone.model, backbone.source); use --backbones, "
            "--size and the output argument",
        ),
        # the same through a key under backbone, and through the node above the script's own keys
        ([*TINY, "backbone.model=resnet50"], "overrides: backbone.model=resnet50 sets a key this script sets "),
        ([*TINY, "extract={size:[64,64],output:x}"], "overrides: extract={size:[64,64],output:x} sets a key this "),
        ([*TINY, "backbone.norm=("], "overrides: Error parsing override 'backbone.norm=('"),
        ([*TINY, "+extract.output=elsewhere"], "overrides: +extract.output=elsewhere sets a key this script sets "),
    ],
)
def test_bad_arguments_are_one_line_errors_before_any_work(
    retrieval, tmp_path, monkeypatch, capsys, arguments, message
):
    monkeypatch.setattr("sys.argv", ["retrieval.py"])  # argparse's program name
    with pytest.raises(SystemExit) as raised:
        retrieval.main([str(tmp_path / "new"), *arguments])
    assert raised.value.code == 2
    assert f"retrieval.py: error: {message}" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_an_unknown_backbone_is_named_with_the_packaged_ones_closest_to_it(retrieval, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["retrieval.py"])
    with pytest.raises(SystemExit):
        retrieval.main([str(tmp_path / "new"), *TINY, "--backbones=resnet18,resnet81"])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error == (
        "retrieval.py: error: --backbones: unknown backbone 'resnet81'; did you mean resnet18 or resnet152 or "
        f"resnet101? {PACKAGED}"
    )


def test_a_folder_with_files_is_never_written_to(retrieval, tmp_path, monkeypatch, capsys):
    (tmp_path / "mine.txt").write_text("my notes\n")
    monkeypatch.setattr("sys.argv", ["retrieval.py"])
    with pytest.raises(SystemExit) as raised:
        retrieval.main([str(tmp_path)])
    assert raised.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.endswith(f"retrieval.py: error: output: {tmp_path} exists and is not an empty folder; give a new one")
    assert [path.name for path in tmp_path.iterdir()] == ["mine.txt"]


@pytest.mark.parametrize("kind", ["a link to nothing", "under a file"])
def test_an_output_folder_that_cannot_be_made_is_one_error_naming_it(retrieval, tmp_path, monkeypatch, capsys, kind):
    """Each was a traceback (FileExistsError, NotADirectoryError) after the argument checks."""
    if kind == "a link to nothing":
        output, reason = tmp_path / "out", "File exists"
        output.symlink_to(tmp_path / "nowhere")
    else:
        output, reason = tmp_path / "file.txt" / "out", "Not a directory"
        (tmp_path / "file.txt").write_text("mine\n")
    monkeypatch.setattr("sys.argv", ["retrieval.py"])
    with pytest.raises(SystemExit) as raised:
        retrieval.main([str(output), *TINY])
    assert raised.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.endswith(f"retrieval.py: error: output: {output}: cannot make the folder ({reason}); give a new one")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["file.txt" if kind == "under a file" else "out"]


def test_a_users_summary_page_is_refused_before_any_work(retrieval, tmp_path, monkeypatch, capsys):
    """It was refused after the views were written and every backbone extracted, and the table was never printed."""
    notes = tmp_path / "notes.md"
    notes.write_text("my notes\n")
    monkeypatch.setattr("sys.argv", ["retrieval.py"])
    with pytest.raises(SystemExit) as raised:
        retrieval.main([str(tmp_path / "new"), *TINY, f"--summary-page={notes}"])
    assert raised.value.code == 2
    refusal = (
        f"retrieval.py: error: --summary-page: {notes} exists and is not a page this script wrote (its first line is "
        "not '# Retrieval results (generated)'); nothing was written: give another path, or move that file"
    )
    assert capsys.readouterr().err.strip().endswith(refusal)
    assert notes.read_text() == "my notes\n" and sorted(tmp_path.iterdir()) == [notes]


def test_a_page_put_there_during_the_run_is_kept_and_the_table_printed_first(retrieval, tmp_path, monkeypatch, capsys):
    """The write still refuses a file of the user's that appeared while the backbones ran (a race the argument check
    cannot see), after printing the table."""
    notes = tmp_path / "notes.md"
    monkeypatch.setattr(retrieval, "read_deepest", _planting(retrieval.read_deepest, notes))
    with pytest.raises(SystemExit) as raised:
        retrieval.main([str(tmp_path / "new"), *TINY, f"--summary-page={notes}"])
    assert str(raised.value).startswith(f"retrieval.py: error: --summary-page: {notes} exists and is not a page")
    assert notes.read_text() == "my notes\n"
    assert capsys.readouterr().out.startswith("| backbone | output | dim | images |")


def _planting(read_deepest, notes):
    """``read_deepest`` that first puts a file of the user's at ``notes``."""

    def planted(features):
        notes.write_text("my notes\n")
        return read_deepest(features)

    return planted


def test_overrides_may_follow_the_options(retrieval, tmp_path, monkeypatch):
    """An override after the options was "unrecognized arguments" (argparse's nargs="*" positional)."""
    monkeypatch.setattr("sys.argv", ["retrieval.py"])
    args = retrieval.parse_args([str(tmp_path / "out"), *TINY, "backbone.norm=train", "--seed=3", "backbone.seed=1"])
    assert args.overrides == ["backbone.norm=train", "backbone.seed=1"]
    assert (args.output, args.views, args.size, args.seed) == (tmp_path / "out", 4, 32, 3)
    assert args.photos == ["astronaut", "camera"] and args.backbones == ["resnet18"]


def test_a_backbone_of_the_users_config_folder_is_left_to_featx_extract(retrieval, tmp_path, monkeypatch):
    """With a search path of the user's, featx-extract (not this script) knows every backbone name."""
    monkeypatch.setattr("sys.argv", ["retrieval.py"])
    arguments = [str(tmp_path / "out"), *TINY, "--backbones=resnet18,mine", f"hydra.searchpath=[file://{tmp_path}]"]
    assert retrieval.parse_args(arguments).backbones == ["resnet18", "mine"]
