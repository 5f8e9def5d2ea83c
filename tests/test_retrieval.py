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


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--photos=astronaut"], "--photos: need 2 or more distinct names from astronaut, "),
        (["--photos=astronaut,eagle"], "--photos: need 2 or more distinct names from astronaut, "),
        (["--views=3"], "--views: must be at least 4"),
        (["--size=8"], "--size: must be 32 to 1024 pixels, got 8"),
    ],
)
def test_bad_arguments_are_one_line_errors(retrieval, tmp_path, arguments, message):
    with pytest.raises(SystemExit) as raised:
        retrieval.main([str(tmp_path / "new"), *arguments])
    assert str(raised.value).startswith(f"retrieval: error: {message}")
    assert not (tmp_path / "new").exists()


def test_a_folder_with_files_is_never_written_to(retrieval, tmp_path):
    (tmp_path / "mine.txt").write_text("my notes\n")
    with pytest.raises(SystemExit) as raised:
        retrieval.main([str(tmp_path)])
    assert (
        str(raised.value) == f"retrieval: error: output: {tmp_path} exists and is not an empty folder; give a new one"
    )
    assert [path.name for path in tmp_path.iterdir()] == ["mine.txt"]
