"""Image retrieval and a linear probe on features stored by ``featx-extract``, over scikit-image's photos.

Writes ``--views`` seeded random views (scale jitter, crop, flip) of each photo shipped with scikit-image as PNG
files, one folder per photo (the photo is the class), runs ``featx-extract`` on that folder for each backbone,
reads the stored features back with ``featx.read_features`` (the deepest output, average-pooled) and reports:

- recall@1 and recall@5: for each view, whether one of its k nearest other views (cosine similarity) shows the
  same photo;
- a linear probe: logistic regression (full-batch AdamW on standardised features) trained on the first half of
  each photo's views, accuracy on both halves.

Usage (from the repository root)::

    python scripts/retrieval.py runs/retrieval                        # resnet18, 8 views of 12 photos, 128x128
    python scripts/retrieval.py runs/retrieval --backbones resnet18,convnext_tiny --views 12
    python scripts/retrieval.py runs/pretrained backbone.weights=DEFAULT   # overrides go to every featx-extract
    python scripts/retrieval.py runs/r --backbones resnet18,mobilenet_v3_large --summary-page docs/results/retrieval.md

Every argument is checked before anything is written (a bad one is a one-line error, exit status 2): the photo
and backbone names, each given once, the ranges of ``--views``, ``--size`` and ``--seed``, an override of a key
this script sets itself, a file of the user's at ``--summary-page``, and the output folder, which must be new or
empty. It receives ``images/``, ``features/<backbone>/`` (featx-extract's folders), ``logs/<backbone>/`` (its Hydra
logs), ``results.md`` (the table, also printed) and ``results.json``; ``--summary-page PATH`` also writes the table
as a page naming the command and the machine (replacing only a page it wrote itself).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, NoReturn, Sequence, Tuple

import torch
from arguments import check_page, whole_number
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException
from PIL import Image
from torch import Tensor
from torch.nn import functional

import featx
from featx.errors import first_line
from featx.files import write_generated_page
from featx.spec.config_files import backbone_names
from featx.spec.keys import suggest
from featx.spec.limits import MAX_SEED

from machine import machine_description
from skimage_views import PHOTOS, load_photo, random_view

SCALE = (1.0, 2.0)  # each view shows 50% to 100% of its photo's longer side
RECALL_AT = (1, 5)
PAGE_TITLE = "# Retrieval results (generated)"
#: the keys this script gives each featx-extract run: an override of one would undo it (``backbone=`` made every row's
#: features another backbone's)
OWN_KEYS = ("backbone", "extract.input", "extract.output", "extract.size", "hydra.run.dir")
#: keys under ``backbone`` that change which network a row holds while the row keeps the name it was given
RELABELLING_KEYS = ("backbone.model", "backbone.source")
PACKAGED = "(featx-list lists the packaged ones; a backbone of your own needs hydra.searchpath=[file://FOLDER])"


def _sets_own_key(key: str) -> bool:
    """Whether an override of ``key`` changes what this script sets (the key, a node above it, ``extract={...}``) or
    which network a row holds (``backbone.model``)."""
    return any(key == own or own.startswith(key + ".") for own in OWN_KEYS) or key in RELABELLING_KEYS


def _fail(message: str) -> NoReturn:
    raise SystemExit(f"retrieval.py: error: {message}")


def write_views(folder: Path, photos: Sequence[str], views: int, size: int, seed: int) -> None:
    """``folder/<photo>/<k>.png`` for k < ``views``: seeded random views of each photo, ``size`` x ``size``."""
    generator = torch.Generator().manual_seed(seed)
    no_boxes = torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64)
    for name in photos:
        pixels = load_photo(name)
        (folder / name).mkdir(parents=True)
        for index in range(views):
            view, _, _ = random_view(pixels, *no_boxes, size, SCALE, generator)
            array = (view * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            Image.fromarray(array).save(folder / name / f"{index:03d}.png")


def run_extract(images: Path, features: Path, logs: Path, backbone: str, size: int, overrides: Sequence[str]) -> None:
    """``featx-extract`` on ``images`` (resized to ``size``, average-pooled) into ``features``; exits on failure."""
    command = [
        sys.executable, "-m", "featx.cli.extract", f"backbone={backbone}", f"extract.input={images}",
        f"extract.output={features}", f"extract.size=[{size},{size}]", "extract.transform=resize",
        "extract.workers=0", "extract.progress=false", f"hydra.run.dir={logs}", *overrides,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        _fail(f"featx-extract failed for backbone={backbone}: {last}")


def read_deepest(features: Path) -> Tuple[str, Tensor, List[str]]:
    """The deepest stored output's name, its vectors (N x C) and their image paths, in path order."""
    rows = list(featx.read_features(features))
    name = list(rows[0][1])[-1]  # outputs come shallow to deep
    return name, torch.stack([outputs[name].float() for _, outputs in rows]), [path for path, _ in rows]


def recall_at(vectors: Tensor, labels: Tensor, ks: Sequence[int]) -> Dict[int, float]:
    """For each k: the fraction of items with an item of the same label among their k most cosine-similar others."""
    unit = functional.normalize(vectors, dim=1)
    similarity = (unit @ unit.T).fill_diagonal_(-float("inf"))
    nearest = similarity.topk(max(ks), dim=1).indices
    same = labels[nearest] == labels[:, None]
    return {k: float(same[:, :k].any(dim=1).float().mean()) for k in ks}


def linear_probe(
    train: Tuple[Tensor, Tensor], test: Tuple[Tensor, Tensor], classes: int, steps: int = 300, seed: int = 0
) -> Tuple[float, float]:
    """Train and test accuracy of a logistic regression fitted on ``train`` (features standardised with the
    training set's statistics; full-batch AdamW, lr 0.01, weight decay 1e-3)."""
    train_x, train_y = train
    mean, std = train_x.mean(dim=0), train_x.std(dim=0).clamp(min=1e-6)
    torch.manual_seed(seed)
    layer = torch.nn.Linear(train_x.shape[1], classes)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=0.01, weight_decay=1e-3)
    for _ in range(steps):
        optimizer.zero_grad()
        functional.cross_entropy(layer((train_x - mean) / std), train_y).backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = [float((layer((x - mean) / std).argmax(1) == y).float().mean()) for x, y in (train, test)]
    return accuracy[0], accuracy[1]


def evaluate(vectors: Tensor, paths: Sequence[str], views: int) -> Dict[str, float]:
    """Recall@1/@5 over all views (``<photo>/<view>.png``); the probe trained on each photo's views numbered below
    ``views // 2``, tested on the rest."""
    classes = [Path(path).parent.name for path in paths]
    names = sorted(set(classes))
    labels = torch.tensor([names.index(name) for name in classes])
    train = torch.tensor([int(Path(path).stem) < views // 2 for path in paths])
    recalls = recall_at(vectors, labels, RECALL_AT)
    train_acc, test_acc = linear_probe((vectors[train], labels[train]), (vectors[~train], labels[~train]), len(names))
    return {**{f"recall@{k}": value for k, value in recalls.items()}, "probe_train_acc": train_acc,
            "probe_test_acc": test_acc}  # fmt: skip


def results_table(rows: List[Dict[str, object]]) -> str:
    lines = [
        "| backbone | output | dim | images | recall@1 | recall@5 | probe train acc | probe test acc |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backbone']} | {r['output']} | {r['dim']} | {r['images']} | {r['recall@1']:.3f} | "
            f"{r['recall@5']:.3f} | {r['probe_train_acc']:.3f} | {r['probe_test_acc']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The checked arguments (``photos`` and ``backbones`` as lists), the output folder made: every refusal is
    argparse's one-line error (exit 2) before anything is written."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="a new or empty folder for the images, features and results")
    parser.add_argument("--backbones", default="resnet18", help="comma-separated featx backbone names")
    parser.add_argument("--photos", default=",".join(PHOTOS), help="comma-separated skimage.data photos (classes)")
    parser.add_argument(
        "--views",
        type=whole_number(4, 1000),
        default=8,
        help="views per photo (default 8); half train the probe, and recall@5 needs 5 other views",
    )
    parser.add_argument("--size", type=whole_number(32, 1024), default=128, help="side of the views (default 128)")
    parser.add_argument("--seed", type=whole_number(0, MAX_SEED), default=0, help="seed of the views (default 0)")
    parser.add_argument("--summary-page", type=Path, help="also write the table as a generated page (for docs/)")
    parser.add_argument("overrides", nargs="*", help="featx-extract overrides, e.g. backbone.weights=DEFAULT")
    args = parser.parse_intermixed_args(argv)  # overrides may come before, between and after the options
    args.photos = args.photos.split(",")
    args.backbones = args.backbones.split(",")
    unknown = [name for name in args.photos if name not in PHOTOS]
    if unknown or len(set(args.photos)) < 2:
        parser.error(f"--photos: need 2 or more distinct names from {', '.join(PHOTOS)}, got {','.join(args.photos)}")
    for option, names in (("--photos", args.photos), ("--backbones", args.backbones)):
        twice = next((name for index, name in enumerate(names) if name in names[:index]), None)
        if twice is not None:
            parser.error(f"{option}: {twice} is named twice; give each {option[2:-1]} once")
    try:
        parsed = OverridesParser.create().parse_overrides(list(args.overrides))
    except OverrideParseException as error:
        parser.error(f"overrides: {first_line(error)}")
    for override, parsed_override in zip(args.overrides, parsed, strict=True):
        if _sets_own_key(parsed_override.key_or_group):
            parser.error(
                f"overrides: {override} sets a key this script sets itself ({', '.join(OWN_KEYS)}) or the backbone's "
                f"model ({', '.join(RELABELLING_KEYS)}); use --backbones, --size and the output argument"
            )
    if not any(parsed_override.key_or_group == "hydra.searchpath" for parsed_override in parsed):
        names = backbone_names()  # with a search path of the user's, featx-extract knows its backbones
        for backbone in args.backbones:
            if backbone not in names:
                parser.error(f"--backbones: unknown backbone {backbone!r}{suggest(backbone, names)} {PACKAGED}")
    if args.summary_page is not None:
        check_page(parser, args.summary_page, PAGE_TITLE, "--summary-page")
    if args.output.exists() and (not args.output.is_dir() or any(args.output.iterdir())):
        parser.error(f"output: {args.output} exists and is not an empty folder; give a new one")
    try:
        (args.output / "images").mkdir(parents=True)
    except OSError as error:
        parser.error(f"output: {args.output}: cannot make the folder ({error.strerror}); give a new one")
    return args


def main(argv: Sequence[str] | None = None) -> List[Dict[str, object]]:
    """Write the views, extract and evaluate per backbone; print and write the table; return its rows."""
    args = parse_args(argv)
    images = args.output / "images"
    write_views(images, args.photos, args.views, args.size, args.seed)
    rows: List[Dict[str, object]] = []
    for backbone in args.backbones:
        features = args.output / "features" / backbone
        run_extract(images, features, args.output / "logs" / backbone, backbone, args.size, args.overrides)
        output, vectors, paths = read_deepest(features)
        rows.append({"backbone": backbone, "output": output, "dim": vectors.shape[1], "images": len(vectors),
                     **evaluate(vectors, paths, args.views)})  # fmt: skip
    table = results_table(rows)
    (args.output / "results.md").write_text(table)
    (args.output / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(table, end="")
    if args.summary_page:
        try:  # a file of the user's put there during the run is kept
            write_generated_page(args.summary_page, summary_page(table, argv), "--summary-page")
        except featx.FeatxError as error:
            _fail(str(error))
    return rows


def summary_page(table: str, argv: Sequence[str] | None) -> str:
    """The table as a page saying how it was made (what ``--summary-page`` writes)."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    return (
        f"{PAGE_TITLE}\n\n"
        f"Written by `{shlex.join(['python', 'scripts/retrieval.py', *arguments])}` on {machine_description()}, "
        f"{time.strftime('%Y-%m-%d')}, torch {torch.__version__}. Do not edit: rerun the command (the views, the "
        "random init and the probe are seeded, so a rerun on one machine gives these numbers).\n\n" + table
    )


if __name__ == "__main__":
    main()
