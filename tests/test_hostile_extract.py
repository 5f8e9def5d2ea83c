"""Hostile extraction: output folders holding the user's files, inputs that change, link or hide, images that are
not what they seem, options past every bound, and output folders tampered with before ``read_features``. The user's
files stay byte-identical, featx's own files are recognisably featx's, a stale or foreign feature is never read
back, and every refusal is a featx error naming the key or the file."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import torch
from helpers import folder_state
from PIL import Image, ImageFile
from safetensors.torch import save_file
from torchvision import transforms

import featx
from featx.errors import ArgumentError, FeatxError
from featx.spec.apps import ExtractOptions
from featx.tasks.extract.listing import NOT_REGULAR, file_identity, find_images
from featx.tasks.extract.run import extract
from featx.tasks.extract.store import FeatureStore, _open_shard

SIZE = 32
SPEC_OVERRIDES = ["device=cpu", "stages={c2:{modules:[conv1,bn1,relu,maxpool,layer1]},c3:{modules:[layer2]}}"]


def _spec(**changes) -> featx.BackboneSpec:
    return featx.load_spec("resnet18", overrides=[*SPEC_OVERRIDES, *(f"{k}={v}" for k, v in changes.items())])


def _options(source, output, **changes) -> ExtractOptions:
    settings = dict(
        input=str(source), output=str(output), size=[SIZE, SIZE], batch_size=2, workers=0, shard_size=2, progress=False
    )
    settings.update(changes)
    return ExtractOptions(**settings)


def test_a_skipped_file_whose_name_holds_line_breaks_is_logged_on_one_line(tmp_path, caplog):
    """An image named with a newline and ANSI escapes (an untrusted dataset) forged a green line in the log."""
    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (40, 36), "red").save(folder / "fine.png")
    (folder / "x\n\x1b[32mfeatx-extract: all good.png").write_bytes(b"not an image")
    with caplog.at_level(logging.WARNING, logger="featx"):
        extract(_spec(), _options(folder, tmp_path / "out"))
    [warning] = [record.getMessage() for record in caplog.records if "skipped" in record.getMessage()]
    assert "\n" not in warning and "\x1b" not in warning
    assert "x\\n\\x1b[32mfeatx-extract: all good.png: unreadable image" in warning


def _sparse_file(path: Path, size: int) -> None:
    """A file of ``size`` bytes that takes no disk space (a hole)."""
    with path.open("wb") as handle:
        handle.truncate(size)


def _save_rgb(path: Path, seed: int, size=(40, 36)) -> None:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[0], size[1], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


@pytest.fixture()
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(3):
        _save_rgb(folder / f"p{index}.png", index)
    return folder


def _reference(spec: featx.BackboneSpec, image) -> Dict[str, torch.Tensor]:
    """featx's documented center_crop transform written out with torchvision calls, on an 8-bit Pillow image or a
    3×H×W float image (16-bit sources)."""
    geometry = transforms.Compose([transforms.Resize(int(SIZE / 0.875)), transforms.CenterCrop(SIZE)])
    as_tensor = transforms.ToTensor() if isinstance(image, Image.Image) else (lambda tensor: tensor)
    prepared = transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))(as_tensor(geometry(image)))
    with torch.no_grad():
        maps = featx.build(spec).eval()(prepared.unsqueeze(0))
    return {name: value[0].mean(dim=(1, 2)) for name, value in maps.items()}


def _stored(output: Path) -> Dict[str, Dict[str, torch.Tensor]]:
    return {Path(path).name: features for path, features in featx.read_features(output)}


def _manifest(output: Path) -> List[dict]:
    return [json.loads(line) for line in (output / "featx-manifest.jsonl").read_text().splitlines()]


# ---- the user's files in the output folder ----------------------------------------------------------------------

USER_FILES = {
    "config.yaml": b"my: experiment\n",
    "manifest.jsonl": b'{"mine": true}\n',
    "shards/shard-r000-00001.safetensors": b"my own shard",
    "notes.md": b"notes",
    "featx-shards/notes.txt": b"mine inside featx's folder",
    "featx-shards/shard-r000-00001.safetensors.bak": b"a backup of mine",
}


def test_the_users_files_in_the_output_folder_survive_runs_and_overwrites(photos, tmp_path):
    output = tmp_path / "out"
    for name, content in USER_FILES.items():
        (output / name).parent.mkdir(parents=True, exist_ok=True)
        (output / name).write_bytes(content)
    outside = folder_state(photos)
    (output / "featx-shards" / "notes.txt").unlink()  # a featx-shards/ without settings is refused: see below
    (output / "featx-shards" / "shard-r000-00001.safetensors.bak").unlink()
    (output / "featx-shards").rmdir()
    extract(_spec(), _options(photos, output))
    for name in ("featx-shards/notes.txt", "featx-shards/shard-r000-00001.safetensors.bak"):
        (output / name).write_bytes(USER_FILES[name])
    extract(_spec(seed=1), _options(photos, output, overwrite=True))  # other settings: featx's files replaced
    for name, content in USER_FILES.items():
        assert (output / name).read_bytes() == content, name
    assert folder_state(photos) == outside
    assert len(_stored(output)) == 3


@pytest.mark.parametrize(
    ("entries", "error_type", "pattern"),
    [
        ({"featx-manifest.jsonl": b"mine\n"}, ArgumentError, r"holds featx-manifest.jsonl but no featx-extract.json"),
        ({"featx-config.yaml": b"mine\n"}, ArgumentError, r"holds featx-config.yaml but no featx-extract.json"),
        ({"featx-shards/a": b"mine"}, ArgumentError, r"holds featx-shards but no featx-extract.json"),
        ({"featx-extract.json": b"{not json"}, FeatxError, r"featx-extract.json is not a featx-extract settings file"),
        ({"featx-extract.json": b'{"a": 1}'}, FeatxError, r"no \"format\": \"featx-extract/4\" entry"),
        ({"featx-extract.json": b'{"format": "featx-extract/2"}'}, FeatxError, r"not a featx-extract settings file"),
        ({"featx-extract.json": b"\xff\xfe"}, FeatxError, r"not a featx-extract settings file"),
        ({"featx-extract.json": b'{"backbone": {}, "outputs": ["c2"]}'}, FeatxError, r"featx-extract/4"),
        ({"featx-extract.json/": None}, FeatxError, r"not a plain file"),
    ],
    ids=[
        "manifest",
        "config",
        "shards",
        "settings-not-json",
        "settings-foreign",
        "settings-no-settings",
        "settings-not-utf8",
        "settings-old-layout",
        "settings-a-folder",
    ],
)
def test_featx_named_files_featx_did_not_write_are_left_alone(photos, tmp_path, entries, error_type, pattern):
    output = tmp_path / "out"
    for name, content in entries.items():
        if content is None:
            (output / name).mkdir(parents=True)
        else:
            (output / name).parent.mkdir(parents=True, exist_ok=True)
            (output / name).write_bytes(content)
    before = folder_state(tmp_path)
    for overwrite in (False, True):
        with pytest.raises(error_type) as error:
            extract(_spec(), _options(photos, output, overwrite=overwrite))
        assert str(error.value).startswith("extract.output: ") and re.search(pattern, str(error.value))
    after = folder_state(tmp_path)
    after.pop("out/.featx-extract.lock", None)
    assert after == before


@pytest.mark.parametrize("name", ["featx-manifest.jsonl", "featx-config.yaml"])
def test_a_folder_in_place_of_a_file_a_run_rewrites_is_refused_before_any_work(photos, tmp_path, name):
    output = tmp_path / "out"
    extract(_spec(), _options(photos, output))
    (output / name).unlink()
    (output / name).mkdir()
    (output / name / "mine.txt").write_text("mine")
    _save_rgb(photos / "new.png", 7)
    shards = sorted((output / "featx-shards").iterdir())
    with pytest.raises(FeatxError, match=rf"^extract.output: {output / name} is not a file featx wrote \(a folder"):
        extract(_spec(), _options(photos, output))
    assert sorted((output / "featx-shards").iterdir()) == shards and (output / name / "mine.txt").exists()


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (lambda out: out.write_text("mine"), r"exists and is not a folder"),
        (lambda out: out.symlink_to(out.parent / "target.txt"), r"exists and is not a folder"),
        (lambda out: out.symlink_to(out.parent / "nowhere"), r"exists and is not a folder"),
        (lambda out: (out.mkdir(), (out / "featx-shards").write_text("mine")), r"holds featx-shards but no"),
    ],
    ids=["a-file", "a-link-to-a-file", "a-dangling-link", "shards-a-file"],
)
def test_an_output_path_that_is_not_a_folder_is_refused(photos, tmp_path, make, pattern):
    (tmp_path / "target.txt").write_text("mine")
    make(tmp_path / "out")
    before = folder_state(tmp_path)
    with pytest.raises(ArgumentError, match=rf"^extract.output: .*{pattern}"):
        extract(_spec(), _options(photos, tmp_path / "out"))
    after = folder_state(tmp_path)
    after.pop("out/.featx-extract.lock", None)
    assert after == before


def test_an_output_folder_inside_the_input_leaves_out_only_featxs_files(photos):
    """Everything under an output folder inside the input was left out: images of the user's already there were
    dropped without a word (no skipped row, exit status 0)."""
    output = photos / "features"
    output.mkdir()
    _save_rgb(output / "mine.png", 7)
    first = extract(_spec(), _options(photos, output))
    again = extract(_spec(), _options(photos, output))
    assert (first.images, first.skipped, again.processed) == (4, 0, 0)
    expected = [str(output / "mine.png"), *(str(p) for p in photos.glob("*.png"))]
    assert sorted(entry["path"] for entry in _manifest(output)) == sorted(expected)


def test_an_output_folder_holding_the_input_leaves_out_only_featxs_files(photos):
    """featx's own entries are left out of the input by their exact names: a user's image named featx-logo.png was
    left out too, without a word."""
    output = photos.parent  # featx writes only featx-named entries there
    first = extract(_spec(), _options(photos, output))
    _save_rgb(output / "featx-logo.png", 9)
    glob = extract(_spec(), _options(f"{output}/**/*", output, overwrite=True))  # the glob also meets featx's files
    assert (first.images, first.skipped, glob.images, glob.skipped) == (3, 0, 4, 0)
    assert sorted(entry["path"] for entry in _manifest(output)) == sorted(
        [str(output / "featx-logo.png"), *(str(p) for p in photos.glob("*.png"))]
    )


def test_a_folder_whose_name_looks_like_a_pattern_is_a_folder(tmp_path):
    folder = tmp_path / "set[1]"
    folder.mkdir()
    _save_rgb(folder / "only.png", 0)
    (tmp_path / "set1").mkdir()  # what the name would match as a pattern
    _save_rgb(tmp_path / "set1" / "other.png", 1)
    assert extract(_spec(), _options(folder, tmp_path / "out")).images == 1
    assert [entry["path"] for entry in _manifest(tmp_path / "out")] == [str(folder / "only.png")]


def test_folders_a_pattern_matches_are_listed_as_skipped_not_dropped(tmp_path):
    """gd/* matched the folders gd/a and gd/b as well as gd/top.png: their images were dropped without a word (no
    skipped row, exit status 0). A folder whose matches the pattern lists too (photos/**/*) is not a skipped row."""
    for index, path in enumerate(["gd/top.png", "gd/a/imgs/1.png", "gd/b/2.png"]):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        _save_rgb(tmp_path / path, index)
    summary = extract(_spec(), _options(f"{tmp_path}/gd/*", tmp_path / "out"))
    assert (summary.images, summary.skipped) == (1, 2)
    reasons = {entry["path"]: entry.get("skipped") for entry in _manifest(tmp_path / "out")}
    folder_reason = (
        "a folder the pattern matches, not its files (a pattern takes the files it matches: add /* for them)"
    )
    assert reasons == {
        str(tmp_path / "gd/top.png"): None,
        str(tmp_path / "gd/a"): folder_reason,
        str(tmp_path / "gd/b"): folder_reason,
    }
    assert [(path.name, reason) for path, reason in find_images(f"{tmp_path}/gd/**/*").skipped] == []
    with pytest.raises(ArgumentError) as only_folders:
        find_images(f"{tmp_path}/gd/*/imgs")
    assert str(only_folders.value) == (
        f"extract.input: the pattern '{tmp_path}/gd/*/imgs' matches no files (only folders: {tmp_path}/gd/*/imgs/* "
        "takes the files in them)"
    )


@pytest.mark.parametrize("pattern", ["", "/*.png"])
def test_pipes_and_devices_under_image_names_are_skipped_without_reading_them(photos, tmp_path, pattern):
    """Listed and skipped with the reason, from a folder and from a pattern alike (a pattern dropped them without a
    word)."""
    os.mkfifo(photos / "pipe.png")  # reading it would wait for a writer
    (photos / "zero.png").symlink_to("/dev/zero")  # reading it would never end
    listed = find_images(str(photos) + pattern)  # left out when listed, before any worker opens them
    assert [(path.name, reason) for path, reason in listed.skipped] == [
        ("pipe.png", NOT_REGULAR),
        ("zero.png", NOT_REGULAR),
    ]
    summary = extract(_spec(), _options(photos, tmp_path / "out"))
    assert (summary.images, summary.skipped) == (3, 2)
    reasons = {Path(entry["path"]).name: entry.get("skipped") for entry in _manifest(tmp_path / "out")}
    assert reasons["pipe.png"] == reasons["zero.png"] == "not a regular file (a pipe, device or socket)"


@pytest.mark.skipif(sys.version_info >= (3, 13), reason="pathlib reads ** inside a name as * from Python 3.13")
def test_a_pattern_pathlib_refuses_is_named(tmp_path):
    with pytest.raises(ArgumentError) as caught:
        find_images(f"{tmp_path}/**.png")
    assert str(caught.value) == (
        f"extract.input: the pattern '{tmp_path}/**.png' cannot be read: Invalid pattern: '**' can only be an entire "
        "path component (write ** as a whole folder name: photos/**/*.png)"
    )


def test_a_pipe_put_in_place_of_a_listed_file_is_skipped_at_once(tmp_path):
    """Read after the listing (a file replaced by a pipe in between): refused without waiting for a writer."""
    os.mkfifo(tmp_path / "pipe.png")
    code = (
        "import sys; from pathlib import Path; from featx.tasks.extract.decode import SkippedImage, read_image_file\n"
        "try:\n    read_image_file(Path(sys.argv[1]))\nexcept SkippedImage as why:\n    print(why)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "pipe.png")], capture_output=True, text=True, timeout=120
    )
    assert done.stdout.strip() == "not a regular file (a pipe, device or socket)", done.stderr[-2000:]


def test_the_input_folder_itself_as_output_is_refused(photos):
    before = folder_state(photos)
    with pytest.raises(ArgumentError, match=r"^extract.output: .*photos is the input folder itself"):
        extract(_spec(), _options(photos, photos))
    assert folder_state(photos) == before


# ---- inputs that link, change, hide or lie --------------------------------------------------------------------


def test_a_linked_image_is_listed_under_its_own_path_and_a_linked_folder_is_not_entered(photos, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _save_rgb(elsewhere / "outside.png", 9)
    (photos / "link.png").symlink_to(elsewhere / "outside.png")
    (photos / "linked-folder").symlink_to(elsewhere, target_is_directory=True)
    (photos / "broken.png").symlink_to(tmp_path / "gone.png")
    summary = extract(_spec(), _options(photos, tmp_path / "out"))
    entries = {Path(entry["path"]).name: entry for entry in _manifest(tmp_path / "out")}
    assert (summary.images, summary.skipped) == (4, 2)
    assert entries["link.png"]["path"] == str(photos / "link.png") and "skipped" not in entries["link.png"]
    assert entries["linked-folder"]["skipped"].startswith("a linked folder")
    assert entries["broken.png"]["skipped"] == "a broken symbolic link"
    assert not any("outside.png" in path for path in entries)


def test_a_pattern_does_not_enter_linked_folders(tmp_path, monkeypatch):
    """A single * entered linked folders: a link out of the input listed a file elsewhere, and a link to its own
    folder listed one image once for each way through the links (4 ** depth with three such links)."""
    photos, elsewhere = tmp_path / "photos", tmp_path / "elsewhere"
    (photos / "cats").mkdir(parents=True)
    elsewhere.mkdir()
    _save_rgb(photos / "cats" / "a.png", 1)
    _save_rgb(photos / "top.png", 3)  # photos/self/top.png matches */*.png
    _save_rgb(elsewhere / "secret.png", 2)
    (photos / "out").symlink_to(elsewhere, target_is_directory=True)
    for name in ("self", "again", "more"):
        (photos / name).symlink_to(".", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    for pattern in (f"{photos}/*/*.png", "photos/*/*.png", "*/*/*.png"):
        listing = find_images(pattern)
        assert listing.images == [photos / "cats" / "a.png"], pattern
        linked = ["again", "more", "out", "self"]
        assert listing.skipped == [
            (photos / name, "a linked folder (featx does not follow links to folders)") for name in linked
        ]
    # a link the pattern names itself is the user's own way in, as a linked input folder is
    assert find_images(f"{photos}/out/*.png").images == [photos / "out" / "secret.png"]
    for pattern in (f"{photos}/out*/*.png", f"{photos}/*/*/*/*.png"):  # the second: 27 ways to cats/a.png
        with pytest.raises(
            ArgumentError, match=r"matches no files \(only below linked folders, which featx does not follow\)$"
        ):
            find_images(pattern)


def test_the_linked_folders_a_double_star_pattern_would_cross_are_named_as_skipped(tmp_path):
    """``**`` never enters a linked folder: photos/**/*.png left out every image below one without a word."""
    photos, elsewhere = tmp_path / "photos", tmp_path / "elsewhere"
    (photos / "cats").mkdir(parents=True)
    (elsewhere / "deep").mkdir(parents=True)
    _save_rgb(photos / "cats" / "a.png", 1)
    _save_rgb(elsewhere / "deep" / "b.png", 2)
    (photos / "out").symlink_to(elsewhere, target_is_directory=True)
    (photos / "cats" / "more").symlink_to(elsewhere, target_is_directory=True)
    (photos / "dogs").symlink_to(elsewhere, target_is_directory=True)
    reason = "a linked folder (featx does not follow links to folders)"
    listing = find_images(f"{photos}/**/*.png")
    assert listing.images == [photos / "cats" / "a.png"]
    assert listing.skipped == [(photos / "cats" / "more", reason), (photos / "dogs", reason), (photos / "out", reason)]
    # only the links the pattern would enter: cats/** never reaches dogs or out
    assert find_images(f"{photos}/cats/**/*.png").skipped == [(photos / "cats" / "more", reason)]
    assert find_images(f"{photos}/c*/**/*.png").skipped == [(photos / "cats" / "more", reason)]
    with pytest.raises(
        ArgumentError, match=r"matches no files \(only below linked folders, which featx does not follow\)$"
    ):
        find_images(f"{photos}/**/deep/*.png")


def test_links_that_loop_are_skipped_as_broken_links(photos, tmp_path):
    """Resolving a link loop (to tell whether a file lies in the output folder) raised RuntimeError: a raw traceback
    and nothing extracted."""
    (photos / "a.png").symlink_to(photos / "b.png")
    (photos / "b.png").symlink_to(photos / "a.png")
    (photos / "self.png").symlink_to(photos / "self.png")
    summary = extract(_spec(), _options(photos, tmp_path / "out"))
    entries = {Path(entry["path"]).name: entry for entry in _manifest(tmp_path / "out")}
    assert (summary.images, summary.skipped) == (3, 3)
    assert {entries[name]["skipped"] for name in ("a.png", "b.png", "self.png")} == {"a broken symbolic link"}


@pytest.mark.parametrize("kind, maxval", [("png", 65535), ("pgm", 65535), ("pgm", 1023)])
def test_a_sixteen_bit_image_keeps_its_sixteen_bits(tmp_path, kind, maxval):
    """A PGM of more than 8 bits (Pillow's mode I) was skipped as "32-bit integer pixels have no fixed range"."""
    folder = tmp_path / "gray16"
    folder.mkdir()
    values = np.random.default_rng(0).integers(0, maxval + 1, (40, 36), dtype=np.uint16)  # > 255: white if clipped
    if kind == "png":
        Image.fromarray(values).save(folder / "deep.png")
    else:  # written by hand: a binary PGM holds big-endian 16-bit samples after its header
        header = f"P5\n{values.shape[1]} {values.shape[0]}\n{maxval}\n".encode()
        (folder / "deep.pgm").write_bytes(header + values.astype(">u2").tobytes())
    extract(_spec(), _options(folder, tmp_path / "out"))
    image = torch.from_numpy(values.astype(np.float32) / maxval).expand(3, -1, -1)
    expected = _reference(_spec(), image)
    for name, value in _stored(tmp_path / "out")[f"deep.{kind}"].items():
        torch.testing.assert_close(value, expected[name], rtol=1e-4, atol=1e-4)


def test_an_image_changed_under_its_name_is_redone_and_a_removed_one_left_out(photos, tmp_path):
    output = tmp_path / "out"
    extract(_spec(), _options(photos, output))
    old = _stored(output)["p0.png"]["c3"]
    _save_rgb(photos / "p0.png", 42, size=(50, 30))  # new content, same name
    (photos / "p1.png").unlink()
    summary = extract(_spec(), _options(photos, output))
    assert (summary.processed, summary.images) == (1, 2)
    stored = _stored(output)
    assert sorted(stored) == ["p0.png", "p2.png"]
    with Image.open(photos / "p0.png") as image:
        expected = _reference(_spec(), image.convert("RGB"))
    assert not torch.allclose(stored["p0.png"]["c3"], old)
    torch.testing.assert_close(stored["p0.png"]["c3"], expected["c3"], rtol=1e-4, atol=1e-5)
    identity = [entry["identity"] for entry in _manifest(output) if entry["path"].endswith("p0.png")][0]
    status = (photos / "p0.png").stat()
    assert identity == [status.st_size, status.st_mtime_ns, status.st_ino]


def test_random_weights_are_the_same_network_in_every_run(photos, tmp_path):
    """weights: null is seeded by the spec: a folder filled by two runs equals one filled by one run."""
    extract(_spec(), _options(photos, tmp_path / "once"))
    extract(_spec(), _options(f"{photos}/p[01].png", tmp_path / "twice"))
    assert extract(_spec(), _options(photos, tmp_path / "twice")).processed == 1
    once, twice = _stored(tmp_path / "once"), _stored(tmp_path / "twice")
    assert sorted(once) == sorted(twice)
    for name in once:
        assert torch.equal(once[name]["c3"], twice[name]["c3"])
    with pytest.raises(ArgumentError, match=r"differing: backbone.seed"):
        extract(_spec(seed=1), _options(photos, tmp_path / "once"))


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width × height`` pixels, with almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("name", "write", "reason"),
    [
        (
            "empty.png",
            lambda p: p.write_bytes(b""),
            r"^unreadable image \(UnidentifiedImageError: cannot identify image file\)$",
        ),
        ("text.jpg", lambda p: p.write_text("not a jpeg"), r"unreadable image"),
        (
            "cut.png",
            lambda p: p.write_bytes(_png_bytes()[:-2000]),
            r"unreadable image \(OSError: image file is truncated",
        ),
        ("bomb.png", lambda p: _png_header_only(p, 40000, 40000), r"DecompressionBomb"),
        (
            "thread.png",  # a tiny file; its shorter side resized to 36 would make 36x720000 pixels
            lambda p: Image.new("RGB", (20000, 1), (128, 128, 128)).save(p),
            r"^20000x1 pixels is more than 32 to 1 \(resizing its shorter side would make a huge image\); crop it "
            r"first$",
        ),
        ("float.tiff", lambda p: Image.fromarray(np.ones((8, 8), np.float32)).save(p), r"floating-point pixels"),
        ("int32.tiff", lambda p: Image.fromarray(np.ones((8, 8), np.int32)).save(p), r"32-bit integer pixels"),
        ("notes.txt", lambda p: p.write_text("hello"), r"not an image file \(extension '.txt'\)"),
        (  # left out of the manifest (recorded without its identity), and read again by every rerun
            "huge.png",
            lambda p: _sparse_file(p, (1 << 30) + 1),
            r"^1073741825 bytes is larger than the 1073741824 an image file may have$",
        ),
        ("noextension", lambda p: p.write_bytes(_png_bytes()), r"not an image file \(extension 'none'\)"),
    ],
)
def test_files_that_are_not_usable_images_are_skipped_with_the_reason(photos, tmp_path, name, write, reason):
    write(photos / name)
    before = folder_state(photos)
    summary = extract(_spec(), _options(photos, tmp_path / "out"))
    skipped = {Path(e["path"]).name: e["skipped"] for e in _manifest(tmp_path / "out") if "skipped" in e}
    assert (summary.images, list(skipped)) == (3, [name])
    assert re.search(reason, skipped[name]) and " at 0x" not in skipped[name], skipped[name]
    assert folder_state(photos) == before


def test_postscript_is_never_handed_to_ghostscript_whatever_the_files_name(photos, tmp_path, monkeypatch):
    """Pillow picks the format from the content: a PostScript program named holiday.jpg went to Ghostscript, which
    ran it (an endless loop hung the run). featx opens no EPS, and lists no .eps/.ps file as an image."""
    from PIL import EpsImagePlugin

    ran = tmp_path / "ghostscript-ran"
    ghostscript = tmp_path / "gs"
    ghostscript.write_text(f"#!/bin/sh\ntouch {ran}\nexit 1\n")
    ghostscript.chmod(0o755)
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", str(ghostscript))  # as if Ghostscript were installed
    program = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\n{ } loop\n"
    for name in ("holiday.jpg", "figure.eps"):
        (photos / name).write_bytes(program)
    summary = extract(_spec(), _options(photos, tmp_path / "out"))
    skipped = {Path(e["path"]).name: e["skipped"] for e in _manifest(tmp_path / "out") if "skipped" in e}
    assert summary.images == 3 and not ran.exists()
    assert skipped == {
        "holiday.jpg": "unreadable image (UnidentifiedImageError: cannot identify image file)",
        "figure.eps": "not an image file (extension '.eps')",
    }


def test_a_file_too_large_stays_skipped_and_one_that_could_not_be_read_is_listed_and_retried(photos, tmp_path):
    """A skip that holds while the file is unchanged (too large) is recorded with its identity: a rerun has nothing
    to do. One that may not hold next time (the file could not be read) has no identity: the manifest still lists it
    with the reason, and a rerun reads it again."""
    huge = photos / "huge.png"
    _sparse_file(huge, (1 << 30) + 1)
    summary = extract(_spec(), _options(photos, tmp_path / "out"))
    assert (summary.images, summary.skipped, summary.processed) == (3, 1, 4)
    assert extract(_spec(), _options(photos, tmp_path / "out")).processed == 0
    huge.unlink()
    _save_rgb(photos / "locked.png", 7)
    store = FeatureStore(tmp_path / "out")
    reason = "cannot be read (PermissionError: [Errno 13] Permission denied)"
    store.write_shard(0, store.next_sequence(0), {}, [], [(str(photos / "locked.png"), reason, None)])
    current = {str(path): file_identity(path) for path in photos.iterdir()}
    assert store.write_manifest(current) == (3, 1, 0)  # huge.png, gone, was a skip record: no features left out
    assert _manifest(tmp_path / "out")[0] == {"path": str(photos / "locked.png"), "identity": None, "skipped": reason}
    assert len(dict(featx.read_features(tmp_path / "out"))) == 3
    summary = extract(_spec(), _options(photos, tmp_path / "out"))
    assert (summary.images, summary.skipped, summary.processed) == (4, 0, 1)


def _without_permission_override() -> List[str]:
    """A command prefix under which a folder without permissions cannot be listed: none for a user; for root, its
    capabilities to bypass file permissions dropped (setpriv)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("root without setpriv lists any folder")
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]


#: an extraction in a process of its own: argv input, output, then the spec's overrides; prints images and skipped
_EXTRACT_CODE = (
    "import sys, featx; from featx.spec.apps import ExtractOptions; from featx.tasks.extract.run import extract\n"
    "spec = featx.load_spec('resnet18', overrides=sys.argv[3:])\n"
    f"options = ExtractOptions(input=sys.argv[1], output=sys.argv[2], size=[{SIZE}, {SIZE}], workers=0, "
    "progress=False)\n"
    "summary = extract(spec, options); print(summary.images, summary.skipped)\n"
)


def test_a_folder_that_cannot_be_listed_is_skipped_with_the_reason_not_left_out_silently(photos, tmp_path):
    """os.walk leaves out a folder it cannot list without a word: its images were missing from the manifest and the
    counts, as if the folder did not exist."""
    locked = photos / "locked"
    locked.mkdir()
    _save_rgb(locked / "inside.png", 9)
    locked.chmod(0)
    try:
        done = subprocess.run(
            [*_without_permission_override(), sys.executable, "-c", _EXTRACT_CODE, str(photos), str(tmp_path / "out")]
            + SPEC_OVERRIDES,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        locked.chmod(0o755)
    assert done.stdout.split() == ["3", "1"], done.stderr[-3000:]
    skipped = {entry["path"]: entry["skipped"] for entry in _manifest(tmp_path / "out") if "skipped" in entry}
    assert skipped == {str(locked): "a folder that cannot be listed (PermissionError: Permission denied)"}
    locked.chmod(0)
    try:  # the input folder itself: refused, not "holds no files"
        listed = subprocess.run(
            [*_without_permission_override(), sys.executable, "-c", _LIST_CODE, str(locked)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        locked.chmod(0o755)
    assert re.fullmatch(
        r"extract\.input: '.*locked' is a folder that cannot be listed \(PermissionError: Permission denied\)\n",
        listed.stdout,
    ), listed.stderr[-3000:]


def test_a_folder_that_can_be_listed_but_not_entered_skips_its_files_with_the_reason(photos, tmp_path):
    """``chmod 644 photos/sub``: its names can be listed but not looked up. The lookup of the first one raised
    PermissionError out of the listing, and the whole run stopped with no features at all (for a folder or a glob
    of it); an input below such a folder is refused naming extract.input."""
    sub = photos / "sub"
    sub.mkdir()
    _save_rgb(sub / "inside.png", 9)
    sub.chmod(0o644)
    outputs = {"folder": (str(photos), tmp_path / "out"), "glob": (f"{photos}/**/*.png", tmp_path / "out-glob")}
    try:
        runs = {
            form: subprocess.run(
                [*_without_permission_override(), sys.executable, "-c", _EXTRACT_CODE, source, str(output)]
                + SPEC_OVERRIDES,
                capture_output=True,
                text=True,
                timeout=300,
            )
            for form, (source, output) in outputs.items()
        }
        below = subprocess.run(
            [*_without_permission_override(), sys.executable, "-c", _LIST_CODE, str(sub / "deeper")],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        sub.chmod(0o755)
    for form, (_, output) in outputs.items():
        assert runs[form].stdout.split() == ["3", "1"], runs[form].stderr[-3000:]
        skipped = {entry["path"]: entry["skipped"] for entry in _manifest(output) if "skipped" in entry}
        assert skipped == {
            str(sub / "inside.png"): "a file that cannot be looked up (PermissionError: Permission denied)"
        }
        assert len(dict(featx.read_features(output))) == 3
    assert (
        below.stdout == f"extract.input: '{sub / 'deeper'}' cannot be looked up (PermissionError: Permission denied)\n"
    ), below.stderr[-3000:]


_LIST_CODE = (
    "import sys\nfrom featx.errors import ArgumentError\nfrom featx.tasks.extract.listing import find_images\n"
    "try:\n    find_images(sys.argv[1])\nexcept ArgumentError as error:\n    print(error)\n"
)


def test_an_image_the_crop_would_resize_past_the_pixel_bound_is_skipped_before_resizing(tmp_path):
    """The 32-to-1 bound was sized for 224: with a wide crop (extract.size=[32, 4096]) the shorter side is resized
    to 4681, and a 72-byte 32x1 strip became 4681x149792 pixels (3.5 GB) before the crop."""
    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (32, 1), (10, 90, 200)).save(folder / "strip.png")
    _save_rgb(folder / "fine.png", seed=1)
    summary = extract(_spec(), _options(folder, tmp_path / "out", size=[32, 4096]))
    skipped = {Path(e["path"]).name: e["skipped"] for e in _manifest(tmp_path / "out") if "skipped" in e}
    assert summary.images == 1
    assert skipped == {
        "strip.png": "32x1 pixels would be resized to 149792x4681 for the crop, more than the 67108864 pixels an "
        "image may take; crop it first, or choose a smaller extract.size"
    }


def test_an_image_just_within_the_proportions_is_extracted(photos, tmp_path):
    Image.new("RGB", (32 * 5, 5), (10, 90, 200)).save(photos / "strip.png")
    assert extract(_spec(), _options(photos, tmp_path / "out")).images == 4


def _png_bytes() -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


# ---- options past their bounds ---------------------------------------------------------------------------------

BAD_OPTIONS = [
    ({"size": [100000, 100000]}, r"^extract.size: expected \[height, width\] of integers in 1..16384"),
    ({"size": [0, 32]}, r"^extract.size: .*got \[0, 32\]"),
    ({"size": [32]}, r"^extract.size: .*got \[32\]"),
    ({"size": [32, 32, 32]}, r"^extract.size: "),
    ({"size": "32"}, r"^extract.size: .*got '32'"),
    ({"size": [32.5, 32]}, r"^extract.size: "),
    ({"size": [True, 32]}, r"^extract.size: "),
    ({"batch_size": 4096, "size": [4096, 4096]}, r"^extract.size: a batch of 4096 inputs of 4096x4096 is more than"),
    (
        {"batch_size": 1, "size": [16384, 16384]},
        r"^extract.size: a batch of 1 inputs of 16384x16384 is more than 33554432",
    ),
    ({"batch_size": 0}, r"^extract.batch_size: must be an integer in 1..4096, got 0"),
    ({"batch_size": 10**6}, r"^extract.batch_size: must be an integer in 1..4096"),
    ({"batch_size": 2.5}, r"^extract.batch_size: "),
    ({"workers": -1}, r"^extract.workers: must be an integer in 0..256, got -1"),
    ({"workers": 10**4}, r"^extract.workers: "),
    ({"shard_size": 0}, r"^extract.shard_size: must be an integer in 1..1000000, got 0"),
    ({"shard_size": 10**7}, r"^extract.shard_size: "),
    ({"pooling": "sum"}, r"^extract.pooling: unknown 'sum'"),
    ({"dtype": "float8"}, r"^extract.dtype: unknown 'float8'"),
    ({"dtype": "int64"}, r"^extract.dtype: unknown 'int64'"),
    ({"transform": "random_crop"}, r"^extract.transform: unknown 'random_crop'"),
    ({"outputs": []}, r"^extract.outputs: empty list"),
    ({"outputs": ["c9"]}, r"^extract.outputs: resnet18 has no output 'c9'"),
    # stored once, and a rerun with [c3, c2] taken as the same settings
    ({"outputs": ["c3", "c2", "c3"]}, r"^extract.outputs: 'c3' is listed twice; name each output once$"),
    # a string was read as its characters: "no output 'c'"
    ({"outputs": "c3"}, r"^extract.outputs: must be a list of output names \(\['c5'\]\), or null for all, got 'c3'$"),
    ({"outputs": [3]}, r"^extract.outputs: must be a list of output names .*got \[3\]$"),
    ({"input": "???"}, r"^extract.input: missing"),
    ({"input": ""}, r"^extract.input: missing"),
    ({"output": ""}, r"^extract.output: missing"),
    ({"input": "/nonexistent/photos"}, r"^extract.input: '/nonexistent/photos' is neither a folder nor a glob"),
    ({"input": "/nonexistent/*.png"}, r"^extract.input: the pattern '/nonexistent/\*.png' matches no files"),
    ({"overwrite": "yes"}, r"^extract.overwrite: must be true or false, got 'yes'"),
    ({"progress": "no"}, r"^extract.progress: must be true or false, got 'no'"),
    ({"output": "/dev/null"}, r"^extract.output: /dev/null exists and is not a folder"),
    (  # said "missing", as it did of a pathlib.Path
        {"input": 5},
        r"^extract.input: must be a folder or glob \(a str or os.PathLike giving one\), got int 5$",
    ),
    ({"output": b"out"}, r"^extract.output: must be a folder \(a str or os.PathLike giving one\), got bytes b'out'$"),
]


@pytest.mark.parametrize(("changes", "pattern"), BAD_OPTIONS, ids=[str(c) for c, _ in BAD_OPTIONS])
def test_options_past_their_bounds_are_named(photos, tmp_path, changes, pattern):
    before = folder_state(tmp_path)
    options = dataclasses.replace(_options(photos, tmp_path / "out"), **changes)
    with pytest.raises(ArgumentError, match=pattern):
        extract(_spec(), options)
    assert folder_state(tmp_path) == before


def test_the_batch_limit_counts_the_size_the_weights_transform_makes(photos, tmp_path, monkeypatch):
    """With the published weights' own transform extract.size is unused, but the pixel limit was checked against it:
    extract.size=[8,8] let a batch of 4096 images of 224x224 (six times the limit) run, and the default size had
    the refusal name extract.size."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # empty: refused before any weights are read
    monkeypatch.setenv("FEATX_OFFLINE", "1")
    before = folder_state(tmp_path)
    for size in ([8, 8], [SIZE, SIZE]):
        options = dataclasses.replace(
            _options(photos, tmp_path / "out"), batch_size=4096, size=size, transform="weights"
        )
        with pytest.raises(ArgumentError) as caught:
            extract(_spec(weights="DEFAULT"), options)
        assert str(caught.value) == (
            "extract.batch_size: a batch of 4096 inputs of 224x224 is more than 33554432 pixels; lower "
            "extract.batch_size"
        )
    assert folder_state(tmp_path) == before
    center_crop = dataclasses.replace(_options(photos, tmp_path / "out"), batch_size=4096, size=[128, 128])
    with pytest.raises(ArgumentError) as caught:
        extract(_spec(), center_crop)
    assert str(caught.value) == (
        "extract.size: a batch of 4096 inputs of 128x128 is more than 33554432 pixels; lower extract.batch_size or "
        "extract.size"
    )


# ---- output folders tampered with before read_features ----------------------------------------------------------


@pytest.fixture()
def finished(photos, tmp_path) -> Path:
    output = tmp_path / "out"
    extract(_spec(), _options(photos, output))
    return output


def _edit_settings(output: Path, change) -> None:
    info = output / "featx-extract.json"
    record = json.loads(info.read_text())
    change(record["settings"])
    info.write_text(json.dumps(record))


def _rewrite_manifest(output: Path, change) -> None:
    lines = _manifest(output)
    first = next(index for index, entry in enumerate(lines) if "skipped" not in entry)
    lines[first] = change(dict(lines[first]))
    (output / "featx-manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


TAMPERED_MANIFESTS = [
    ("shard-escape", lambda e: {**e, "shard": "../../secret.safetensors"}, r"line 1 .*shard '../../secret"),
    ("shard-absolute", lambda e: {**e, "shard": "/etc/secret.safetensors"}, r"line 1 .*shard '/etc/secret"),
    ("shard-dotdot-inside", lambda e: {**e, "shard": "featx-shards/../x.safetensors"}, r"line 1 .*is not a file"),
    ("shard-other-name", lambda e: {**e, "shard": "featx-shards/mine.safetensors"}, r"line 1 .*is not a file"),
    ("shard-number", lambda e: {**e, "shard": 3}, r"line 1 .*shard 3"),
    ("shard-missing", lambda e: {k: v for k, v in e.items() if k != "shard"}, r"line 1 .*shard None"),
    ("row-negative", lambda e: {**e, "row": -1}, r"line 1 .*row -1 is not a row number"),
    ("row-string", lambda e: {**e, "row": "0"}, r"line 1 .*row '0' is not a row number"),
    ("row-float", lambda e: {**e, "row": 0.0}, r"line 1 .*row 0.0"),
    ("row-bool", lambda e: {**e, "row": True}, r"line 1 .*row True"),
    (
        "row-past-end",
        lambda e: {**e, "row": 10**9},
        r"line 1 gives '.*p0.png' \(\[\d+, \d+, \d+\]\) at row 1000000000 of "
        r"featx-shards/shard-r000-00001.safetensors, which holds no image there",
    ),
    ("path-missing", lambda e: {k: v for k, v in e.items() if k != "path"}, r"line 1 .*not an object with a path"),
    ("not-an-object", lambda e: [1, 2], r"line 1 .*not an object with a path"),
    (  # raised TypeError: 'int' object is not iterable
        "identity-number",
        lambda e: {**e, "identity": 5},
        r"line 1 is not a featx-extract manifest entry \(identity 5 is not \[size, mtime_ns, inode\]\); rerun",
    ),
    ("identity-object", lambda e: {**e, "identity": {"a": 1}}, r"line 1 .*identity \{'a': 1\} is not \[size"),
    (  # read back as a skipped file
        "skipped-number",
        lambda e: {"path": e["path"], "identity": None, "skipped": 5},
        r"line 1 is not a featx-extract manifest entry \(skipped 5 is not a reason\)",
    ),
]


@pytest.mark.parametrize(
    ("change", "pattern"), [c[1:] for c in TAMPERED_MANIFESTS], ids=[c[0] for c in TAMPERED_MANIFESTS]
)
def test_a_tampered_manifest_line_is_named_and_nothing_outside_is_read(finished, tmp_path, change, pattern):
    (tmp_path / "secret.safetensors").write_bytes(b"")
    save_file({"c2": torch.ones(1, 64), "c3": torch.ones(1, 128)}, str(tmp_path / "secret.safetensors"))
    _rewrite_manifest(finished, change)
    with pytest.raises(FeatxError) as error:
        list(featx.read_features(finished))
    message = str(error.value)
    assert message.startswith("read_features(): ") and "featx-manifest.jsonl" in message, message
    assert re.search(pattern, message), message


@pytest.mark.parametrize(
    ("damage", "error_type", "pattern"),
    [
        (lambda o: (o / "featx-manifest.jsonl").write_text("{not json\n"), FeatxError, r"line 1 is not a featx"),
        (lambda o: (o / "featx-manifest.jsonl").write_bytes(b"\xff\xfe\n"), FeatxError, r"line 1 is not a featx"),
        (lambda o: (o / "featx-manifest.jsonl").unlink(), FeatxError, r"has no featx-manifest.jsonl: its run"),
        (
            lambda o: (o / "featx-extract.json").write_text("{"),
            FeatxError,
            r"featx-extract.json is not a featx-extract",
        ),
        (lambda o: (o / "featx-extract.json").unlink(), FeatxError, r"has no featx-extract.json"),
        (
            lambda o: (o / "featx-extract.json").write_text(
                json.dumps({"format": "featx-extract/2", "settings": {"outputs": "c2"}})
            ),
            FeatxError,
            r"no list of outputs",
        ),
        (  # the caller was blamed: "outputs must be a list of distinct output names ..., got None"
            lambda o: _edit_settings(o, lambda settings: settings.update(outputs=["c2", "c2"])),
            FeatxError,
            r"featx-extract\.json is not a featx-extract settings file \(an output named twice in its settings\)",
        ),
        (lambda o: _cut(_first_shard(o)), FeatxError, r"the shard .*shard-r000-00001.safetensors is unreadable"),
        (lambda o: _first_shard(o).write_bytes(b""), FeatxError, r"shard-r000-00001.safetensors is unreadable"),
        (
            lambda o: save_file({"c2": torch.ones(2, 64)}, str(_first_shard(o))),
            FeatxError,
            r"unreadable \(no featx-extract record",
        ),
        (  # said "is unreadable (No such file ...); delete it", of a file already gone
            lambda o: _first_shard(o).unlink(),
            FeatxError,
            r"the shard .*shard-r000-00001\.safetensors is missing; rerun featx-extract to redo its images \(or a "
            r"featx-extract run on the folder removed it: read again once the run has finished\)$",
        ),
        (  # said the shard holds c2 as float32, "the settings give ... in 'None'"
            lambda o: _edit_settings(o, lambda settings: settings.update(dtype=["float32"])),
            FeatxError,
            r"featx-extract\.json gives the features' dtype as \['float32'\], none featx writes \(float32, float16, "
            r"bfloat16\): the file is not as featx wrote it; rerun featx-extract with extract\.overwrite=true",
        ),
    ],
    ids=[
        "manifest-not-json",
        "manifest-not-utf8",
        "manifest-gone",
        "settings-not-json",
        "settings-gone",
        "settings-outputs",
        "settings-outputs-twice",
        "shard-cut",
        "shard-empty",
        "shard-foreign",
        "shard-gone",
        "settings-dtype",
    ],
)
def test_a_damaged_output_folder_is_named_by_read_features(finished, damage, error_type, pattern):
    damage(finished)
    with pytest.raises(error_type) as error:
        list(featx.read_features(finished))
    assert str(error.value).startswith("read_features(): ") and re.search(pattern, str(error.value)), str(error.value)


def _first_shard(output: Path) -> Path:
    return output / "featx-shards" / "shard-r000-00001.safetensors"


def _cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    ("where", "outputs", "error_type", "pattern"),
    [
        ("missing", None, FeatxError, r"has no featx-extract.json: it is not a featx-extract output folder"),
        ("a-file", None, FeatxError, r"has no featx-extract.json"),
        ("finished", ["c9"], ArgumentError, r"outputs \['c9'\] are not stored there; stored: c2, c3"),
        ("finished", "c2", ArgumentError, r"outputs must be a list of distinct output names"),
        ("finished", [2], ArgumentError, r"outputs must be a list of distinct output names"),
        ("finished", 5, ArgumentError, r"outputs must be a list of distinct output names .*got 5"),  # was TypeError
        ("finished", [], ArgumentError, r"outputs must be a list of distinct output names"),  # gave empty rows
        ("finished", ["c3", "c3"], ArgumentError, r"outputs must be a list of distinct output names"),
        ("finished", {"c3", "c2"}, ArgumentError, r"outputs must be a list of distinct output names"),  # no order
        # a generator was used up by the check, and every row came back empty
        ("finished", (name for name in ["c3"]), ArgumentError, r"outputs must be a list of distinct output names"),
        (
            "finished",
            [f"o{i}" for i in range(10**5)],
            ArgumentError,
            r"outputs \['o0', .*'o4' and 99995 more\] are not",
        ),
    ],
)
def test_read_features_names_what_it_cannot_read(finished, tmp_path, where, outputs, error_type, pattern):
    (tmp_path / "a-file").write_text("x")
    folder = finished if where == "finished" else tmp_path / where
    with pytest.raises(error_type, match=rf"^read_features\(\): .*{pattern}"):
        featx.read_features(folder, outputs=outputs)  # checked when called, before the first row


@pytest.mark.parametrize("folder", [None, 5, "", "out\0put"], ids=["none", "int", "empty", "nul"])
def test_read_features_names_a_folder_argument_that_is_not_a_path(folder):
    with pytest.raises(ArgumentError, match=r"^read_features\(\): output_dir must be a file system path"):
        list(featx.read_features(folder))


def test_a_shard_damaged_before_a_rerun_is_named_not_overwritten(finished, photos):
    shard = _first_shard(finished)
    _cut(shard)
    damaged = shard.read_bytes()
    with pytest.raises(FeatxError, match=rf"^extract.output: the shard {shard} is unreadable .*delete it and rerun"):
        extract(_spec(), _options(photos, finished))
    assert shard.read_bytes() == damaged


def test_a_weights_file_rewritten_under_its_name_is_other_settings(photos, tmp_path):
    weights = tmp_path / "w.pth"
    torch.manual_seed(0)
    import torchvision

    torch.save(torchvision.models.resnet18().state_dict(), weights)
    extract(_spec(weights=weights), _options(photos, tmp_path / "out"))
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    os.utime(weights, ns=(1, 1))
    with pytest.raises(ArgumentError, match=r"differing: backbone.weights_file"):
        extract(_spec(weights=weights), _options(photos, tmp_path / "out"))


def test_the_same_weights_copied_into_place_or_elsewhere_resume(photos, tmp_path, monkeypatch):
    """The weights file is recorded by the digest of its bytes: rsync -a, each node's own copy in a multi-node run
    (at another path), or the same file named relative to the working directory is the same weights to a resume
    (the path was recorded too, so a copy elsewhere was refused as other settings)."""
    import shutil

    import torchvision

    weights = tmp_path / "w.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    extract(_spec(weights=weights), _options(photos, tmp_path / "out"))
    shutil.copy2(weights, tmp_path / "copy.pth")
    os.replace(tmp_path / "copy.pth", weights)  # a new inode, the same size and modification time
    assert extract(_spec(weights=weights), _options(photos, tmp_path / "out")).processed == 0
    (tmp_path / "node2").mkdir()
    shutil.copy(weights, tmp_path / "node2" / "weights.pth")  # another name, another time
    assert extract(_spec(weights=tmp_path / "node2" / "weights.pth"), _options(photos, tmp_path / "out")).processed == 0
    monkeypatch.chdir(tmp_path)
    assert extract(_spec(weights="./w.pth"), _options(photos, tmp_path / "out")).processed == 0


def test_other_weights_of_the_same_size_and_time_are_other_settings(photos, tmp_path):
    """Two networks of one architecture save to files of one size; with one modification time (a Nix store, an
    archive with normalised times) size and time alone took the other network's file for the same weights."""
    import torchvision

    weights, other = tmp_path / "w.pth", tmp_path / "v.pth"  # names of one length: files of one size
    for seed, path in ((0, weights), (1, other)):
        torch.manual_seed(seed)
        torch.save(torchvision.models.resnet18().state_dict(), path)
        os.utime(path, ns=(10**18, 10**18))
    assert weights.stat().st_size == other.stat().st_size
    extract(_spec(weights=weights), _options(photos, tmp_path / "out"))
    os.replace(other, weights)
    with pytest.raises(ArgumentError, match=r"differing: backbone.weights_file"):
        extract(_spec(weights=weights), _options(photos, tmp_path / "out"))


def test_workers_with_a_temp_dir_too_long_for_a_socket_are_refused_instead_of_hanging(photos, tmp_path, monkeypatch):
    """DataLoader workers hand batches over through a socket under the temp dir; with a path too long for a socket
    every worker fails and the loader would wait forever (seen with pytest's deep temp dirs)."""
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    with pytest.raises(ArgumentError) as caught:
        extract(_spec(), _options(photos, tmp_path / "out", workers=2))
    message = str(caught.value)
    assert message.startswith("extract.workers: 2 worker processes hand batches over through sockets in the temp dir ")
    assert "set TMPDIR to a shorter folder, or extract.workers=0" in message
    assert not (tmp_path / "out").exists()
    summary = extract(_spec(), _options(photos, tmp_path / "out", workers=0))  # no workers: no socket
    assert summary.images == 3


def _images_per_shard(output: Path) -> List[int]:
    from safetensors import safe_open

    from featx.tasks.extract.store import METADATA_KEY, FeatureStore

    counts = []
    for shard in FeatureStore(output).shards():
        with safe_open(str(shard), framework="pt") as handle:
            counts.append(len(json.loads(handle.metadata()[METADATA_KEY])["images"]))
    return counts


def test_a_shard_holds_no_more_feature_bytes_than_the_bound(photos, tmp_path, monkeypatch):
    """pooling: none keeps full maps: shard_size images of them were held before the first shard was written (VGG-16's
    c1 at 224: 25 GB for the default 1024). A shard now holds at most MAX_SHARD_BYTES of features."""
    from featx.tasks.extract import run

    per_image = 128 * (SIZE // 8) ** 2 * 4  # c3 of the spec: 128 channels at stride 8, float32
    monkeypatch.setattr(run, "MAX_SHARD_BYTES", 2 * per_image)
    for index in range(3, 7):
        _save_rgb(photos / f"p{index}.png", index)
    extract(_spec(), _options(photos, tmp_path / "out", pooling="none", outputs=["c3"], shard_size=1024))
    assert sorted(_images_per_shard(tmp_path / "out")) == [1, 2, 2, 2]
    assert len(dict(featx.read_features(tmp_path / "out"))) == 7


def test_running_out_of_memory_while_decoding_is_an_error_not_a_skipped_image(photos, tmp_path, monkeypatch):
    """A MemoryError while decoding (a worker short of memory) was recorded as an 'unreadable image' with the file's
    identity, so a rerun with memory to spare skipped every such image for good, and the run exited 0."""
    from featx.tasks.extract import decode

    decode_with_pillow = decode.decode_with_pillow

    def short_of_memory(data, transform):
        raise MemoryError()

    monkeypatch.setattr(decode, "decode_with_pillow", short_of_memory)
    with pytest.raises(FeatxError) as caught:
        extract(_spec(), _options(photos, tmp_path / "out"))
    assert str(caught.value) == (
        "featx-extract: ran out of memory reading or decoding the images (with extract.workers=0, "
        "extract.batch_size=2); lower them, or free memory; the shards written so far are kept and a rerun resumes"
    )
    monkeypatch.setattr(decode, "decode_with_pillow", decode_with_pillow)
    summary = extract(_spec(), _options(photos, tmp_path / "out"))
    assert (summary.images, summary.skipped) == (3, 0)


def test_reading_an_image_takes_memory_for_its_size_not_for_the_largest_allowed(photos):
    """A read of MAX_IMAGE_BYTES + 1 (1 GiB) reserved that much for every image: under a memory limit (ulimit -v, as
    clusters set) every image was skipped as unreadable."""
    code = f"""
import resource
from pathlib import Path
from featx.tasks.extract.decode import read_image_file
status = Path("/proc/self/status").read_text()
used = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmSize:"))) * 1024
resource.setrlimit(resource.RLIMIT_AS, (used + (256 << 20), resource.RLIM_INFINITY))
data, _ = read_image_file(Path({str(photos / "p0.png")!r}))
print(len(data))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == (photos / "p0.png").stat().st_size


def _mapped_files_under(folder: Path) -> int:
    """How many distinct shard files under ``folder`` this process has mapped or open now."""
    names = set()
    for line in Path("/proc/self/maps").read_text().splitlines():
        if str(folder) in line and line.endswith(".safetensors"):
            names.add(line.split()[-1])
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(str(folder)) and target.endswith(".safetensors"):
            names.add(target)
    return len(names)


def test_read_features_keeps_a_few_shards_open_not_every_shard_it_read(photos, tmp_path):
    """Every shard visited stayed mapped until the iteration ended: a folder of many (or large) shards ran out of
    file descriptors or address space and then blamed a valid shard."""
    from featx.tasks.extract import store

    for index in range(3, 9):
        _save_rgb(photos / f"p{index}.png", index)
    output = tmp_path / "out"
    extract(_spec(), _options(photos, output, shard_size=1))
    assert len(list(output.glob("**/*.safetensors"))) == 9
    held = []
    rows = 0
    for _, features in featx.read_features(output):
        rows += 1
        held.append(_mapped_files_under(output))
        assert features["c3"].shape == (128,)
    assert rows == 9 and max(held) == store._OPEN_SHARDS == 4
    del features  # a row may be a view of its shard's map
    assert _mapped_files_under(output) == 0


def test_read_features_opens_each_shard_once_when_ranks_took_turns(tmp_path, monkeypatch):
    """featx-extract gives image i to rank i % world and the manifest lists rows in path order, so consecutive rows
    come from every rank's shard in turn: with more ranks than shards kept open, every row reopened its shard and
    parsed its record again (8 ranks x 1,000 images: 100 times slower)."""
    from featx.tasks.extract import store

    world, count = 6, 60
    paths = [f"/data/img{index:04d}.jpg" for index in range(count)]
    output = store.FeatureStore(tmp_path / "out")
    output.prepare({"outputs": ["c5"], "dtype": "float32"}, "", False)
    for rank in range(world):
        mine = [path for index, path in enumerate(paths) if index % world == rank]
        output.write_shard(
            rank, 1, {"c5": torch.arange(len(mine) * 2.0).view(-1, 2)}, [(p, (1, 1, 1)) for p in mine], []
        )
    output.write_manifest({path: (1, 1, 1) for path in paths})
    open_shard, opened = store._open_shard, []
    monkeypatch.setattr(
        store, "_open_shard", lambda *args, **kwargs: (opened.append(args[0]), open_shard(*args, **kwargs))[1]
    )
    rows = list(featx.read_features(tmp_path / "out"))
    assert [path for path, _ in rows] == paths and len(opened) == world


def test_a_weights_file_rewritten_after_the_build_read_it_is_refused(photos, tmp_path, monkeypatch):
    """The features are recorded against the weights file's identity, taken after the build: a file rewritten in
    between would be recorded as the one the features came from."""
    import torchvision

    from featx.tasks.extract import run

    weights = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    build = run.build

    def build_then_rewrite(spec):
        backbone = build(spec)
        if spec.device != "meta":  # the build that reads the weights (the size check builds on meta first)
            torch.save(torchvision.models.resnet18().state_dict(), weights)  # the next epoch's checkpoint
            os.utime(weights, ns=(1, 1))
        return backbone

    monkeypatch.setattr(run, "build", build_then_rewrite)
    with pytest.raises(featx.WeightsError, match=r"^backbone\.weights: .*r18\.pth changed while featx-extract read it"):
        extract(_spec(weights=str(weights)), _options(photos, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


# ---- shards from another extraction, links, FIFOs, and a folder overwritten while it is read ------------------------


def _extract_folder(photos: Path, output: Path, **changes) -> Path:
    options = {key: changes.pop(key) for key in list(changes) if key in ("overwrite", "dtype", "shard_size")}
    extract(_spec(**changes), _options(photos, output, **options))
    return output


def _shard(output: Path, number: int) -> Path:
    return output / "featx-shards" / f"shard-r000-{number:05d}.safetensors"


def test_a_shard_copied_in_from_another_extraction_is_refused_not_mixed_in(photos, tmp_path):
    """Shards carry no settings: a shard from another folder (other seed, other dtype) was read back as this folder's
    features and adopted by a resume ("nothing left to do"), under a settings file that says otherwise."""
    ours = _extract_folder(photos, tmp_path / "ours")
    other = _extract_folder(photos, tmp_path / "other", seed=1, dtype="float16")
    _shard(ours, 2).write_bytes(_shard(other, 2).read_bytes())
    before = folder_state(ours)
    with pytest.raises(FeatxError) as caught:
        list(featx.read_features(ours))
    assert str(caught.value).startswith(
        f"read_features(): the shard {_shard(ours, 2)} belongs to another extraction than the folder's "
        "featx-extract.json describes"
    )
    with pytest.raises(FeatxError) as caught:
        _extract_folder(photos, ours)
    assert str(caught.value).startswith(f"extract.output: the shard {_shard(ours, 2)} belongs to another extraction")
    assert folder_state(ours) == before


def test_an_overwrite_while_features_are_read_is_refused_not_mixed(photos, tmp_path):
    """read_features reopened shards by name after another run had replaced them with another network's."""
    output = _extract_folder(photos, tmp_path / "out", shard_size=1)
    reading = featx.read_features(output)
    first = next(reading)
    _extract_folder(photos, output, seed=7, overwrite=True, shard_size=1)
    with pytest.raises(FeatxError, match=r"belongs to another extraction .* another featx-extract run replaced"):
        list(reading)
    assert first[0].endswith("p0.png")


@pytest.mark.parametrize("place", ["shard", "shard-folder", "manifest"])
def test_links_in_place_of_featx_files_are_refused(photos, tmp_path, place):
    """A linked shard or shard folder read another folder's features (and survived an overwrite, as featx never
    removes links); a linked manifest was read as this folder's."""
    output = _extract_folder(photos, tmp_path / "out")
    other = _extract_folder(photos, tmp_path / "other", seed=1)
    targets = {
        "shard": (_shard(output, 1), _shard(other, 1)),
        "shard-folder": (output / "featx-shards", other / "featx-shards"),
        "manifest": (output / "featx-manifest.jsonl", other / "featx-manifest.jsonl"),
    }
    link, target = targets[place]
    if link.is_dir():
        for shard in link.iterdir():
            shard.unlink()
        link.rmdir()
    else:
        link.unlink()
    link.symlink_to(target)
    other_state = folder_state(other)
    with pytest.raises(FeatxError, match=rf"{re.escape(str(link))} is not (a file featx wrote \(a link\)|the folder)"):
        list(featx.read_features(output))
    if place != "manifest":  # a run rewrites the manifest; it refuses a link there before anything (tested above)
        for overwrite in (False, True):
            with pytest.raises(FeatxError, match=rf"{re.escape(str(link))} is not"):
                _extract_folder(photos, output, **({"seed": 3, "overwrite": True} if overwrite else {}))
    assert link.is_symlink() and folder_state(other) == other_state


@pytest.mark.parametrize("place", ["shard", "manifest"])
def test_a_fifo_in_place_of_a_shard_or_the_manifest_is_refused_without_blocking(photos, tmp_path, place):
    output = _extract_folder(photos, tmp_path / "out")
    fifo = _shard(output, 1) if place == "shard" else output / "featx-manifest.jsonl"
    fifo.unlink()
    os.mkfifo(fifo)
    code = (
        "import featx, sys\n"
        "try:\n    list(featx.read_features(sys.argv[1]))\n"
        "except featx.FeatxError as error:\n    print(error)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(output)], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == (
        f"read_features(): {fifo} is not a file featx wrote (not a plain file); featx leaves it alone: move it away, "
        "then rerun featx-extract to redo what it held"
    ), done.stderr


@pytest.mark.parametrize("change", ["duplicate", "out-of-order"])
def test_a_manifest_listing_a_file_twice_or_out_of_path_order_is_refused(photos, tmp_path, change):
    output = _extract_folder(photos, tmp_path / "out")
    manifest = output / "featx-manifest.jsonl"
    lines = manifest.read_text().splitlines(keepends=True)
    manifest.write_text("".join(lines + lines[:1] if change == "duplicate" else [lines[1], lines[0], *lines[2:]]))
    with pytest.raises(FeatxError) as caught:
        list(featx.read_features(output))
    line = len(lines) + 1 if change == "duplicate" else 2
    assert re.fullmatch(
        rf"read_features\(\): {re.escape(str(manifest))} line {line} lists '.*p\d\.png' after '.*p\d\.png': a manifest "
        "lists each file once, in path order; rerun the same featx-extract command to rebuild it",
        str(caught.value),
    )


def test_a_shard_rewritten_with_other_dtype_or_shape_is_refused(photos, tmp_path):
    """A shard of the folder's own collection whose tensors differ from the dtype and shapes the settings and the
    manifest give was handed out as it was."""
    from safetensors import safe_open

    output = _extract_folder(photos, tmp_path / "out")
    with safe_open(str(_shard(output, 1)), framework="pt") as handle:
        metadata, tensors = handle.metadata(), {name: handle.get_tensor(name) for name in handle.keys()}
    tensors["c3"] = torch.full((tensors["c3"].shape[0], 7), 1e30, dtype=torch.float64)
    save_file(tensors, str(_shard(output, 1)), metadata=metadata)
    with pytest.raises(FeatxError) as caught:
        list(featx.read_features(output, outputs=["c3"]))
    assert re.fullmatch(
        r"read_features\(\): .*featx-manifest.jsonl line 1: the shard holds 'c3' as float64 \[7\], the manifest and "
        r"settings give \[128\] in 'torch.float32': the shard is not as featx wrote it; .*",
        str(caught.value),
    )


@pytest.mark.parametrize("earlier", ["featx-extract/2", "featx-extract/3"])
def test_a_folder_of_an_earlier_featx_is_refused_until_overwritten(photos, tmp_path, earlier):
    """An earlier featx's shards carry no collection (featx-extract/2) or no digest of the settings they were made
    with (featx-extract/3), so they cannot be told from shards copied in, or from a settings file edited since."""
    output = _extract_folder(photos, tmp_path / "out")
    for shard in sorted((output / "featx-shards").iterdir()):
        _resave_shard(shard, lambda tensors, record: record.pop("settings_digest"))
    info = output / "featx-extract.json"
    content = json.loads(info.read_text())
    kept = {"collection": content["collection"]} if earlier == "featx-extract/3" else {}
    info.write_text(json.dumps({"format": earlier, **kept, "settings": content["settings"]}))
    with pytest.raises(FeatxError) as caught:
        list(featx.read_features(output))
    lacking = (
        "record neither their folder's collection nor the settings they were made with, so shards copied in from "
        "another folder, or a settings file edited since,"
        if earlier == "featx-extract/2"
        else "do not record the settings they were made with, so a settings file edited since"
    )
    assert str(caught.value) == (
        f"read_features(): {info} was written by an earlier featx ({earlier}), whose shards {lacking} could not be "
        "told apart; rerun featx-extract on it with extract.overwrite=true to redo its features with this featx"
    )
    with pytest.raises(ArgumentError, match=r"written by an earlier featx .*set extract.overwrite=true"):
        _extract_folder(photos, output)
    _extract_folder(photos, output, overwrite=True)
    assert json.loads(info.read_text())["collection"] != content["collection"]
    assert len(list(featx.read_features(output))) == 3


def test_a_long_shard_name_in_a_tampered_manifest_is_not_echoed_whole(photos, tmp_path):
    output = _extract_folder(photos, tmp_path / "out")
    manifest = output / "featx-manifest.jsonl"
    entries = _manifest(output)
    entries[0]["shard"] = "x" * 4000
    manifest.write_text("".join(json.dumps(entry) + "\n" for entry in entries))
    with pytest.raises(FeatxError) as caught:
        list(featx.read_features(output))
    assert "x" * 100 not in str(caught.value) and len(str(caught.value)) < 400


def test_files_of_one_size_and_time_whose_names_were_swapped_are_redone(tmp_path):
    """(size, mtime) could not tell two files apart after ``mv a t; mv b a; mv t b``: an archive unpacked with
    second-resolution times gives many files one time, and fixed-size formats (BMP) one size. The rerun reported
    nothing left to do, and a.bmp kept the features of the file now named b.bmp."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for index, name in enumerate(("a", "b", "c")):
        pixels = np.random.default_rng(index).integers(0, 256, (36, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{name}.bmp")
        os.utime(folder / f"{name}.bmp", ns=(1_700_000_000 * 10**9, 1_700_000_000 * 10**9))
    output = tmp_path / "out"
    extract(_spec(), _options(folder, output))
    (folder / "a.bmp").rename(folder / "t.bmp")
    (folder / "b.bmp").rename(folder / "a.bmp")
    (folder / "t.bmp").rename(folder / "b.bmp")
    summary = extract(_spec(), _options(folder, output))
    assert summary.processed == 2
    stored = _stored(output)
    for name in ("a.bmp", "b.bmp"):
        with Image.open(folder / name) as image:
            expected = _reference(_spec(), image.convert("RGB"))
        torch.testing.assert_close(stored[name]["c3"], expected["c3"], rtol=1e-4, atol=1e-5)


def test_files_dated_before_1970_are_stored_and_read_back(tmp_path):
    """A modification time before 1970 is negative (tar restores such dates): featx wrote it in a shard's identity,
    then refused its own shard as unreadable, on every rerun too (and after deleting the shard, as advised)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for index, name in enumerate(("old.png", "new.png")):
        pixels = np.random.default_rng(index).integers(0, 256, (36, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / name)
    (folder / "notes.txt").write_text("not an image")  # skipped: its identity is recorded too
    for name in ("old.png", "notes.txt"):
        os.utime(folder / name, ns=(-315_619_200 * 10**9, -315_619_200 * 10**9))  # 1960-01-01
    output = tmp_path / "out"
    first = extract(_spec(), _options(folder, output))
    assert first.images == 2
    again = extract(_spec(), _options(folder, output))
    assert again.processed == 0
    stored = _stored(output)
    with Image.open(folder / "old.png") as image:
        expected = _reference(_spec(), image.convert("RGB"))
    torch.testing.assert_close(stored["old.png"]["c3"], expected["c3"], rtol=1e-4, atol=1e-5)


def test_a_run_on_another_input_says_the_manifest_leaves_the_first_inputs_features_out(photos, tmp_path, caplog):
    """The manifest lists this run's input only: a second input written to the same folder made the first one's
    features vanish from read_features without a word (they stay in their shards)."""
    other = tmp_path / "other"
    other.mkdir()
    _save_rgb(other / "q.png", 7)
    (photos / "notes.txt").write_text("no image")  # a skip record, no features: not counted
    output = tmp_path / "out"
    extract(_spec(), _options(photos, output))
    with caplog.at_level(logging.WARNING, logger="featx"):
        extract(_spec(), _options(other, output))
    [warning] = [record.getMessage() for record in caplog.records if "shards also hold" in record.getMessage()]
    assert warning.startswith("the shards also hold 3 files this input does not list (another extract.input")
    assert sorted(_stored(output)) == ["q.png"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="featx"):
        again = extract(_spec(), _options(photos, output))  # listed again, none computed anew
    assert again.processed == 0 and sorted(_stored(output)) == ["p0.png", "p1.png", "p2.png"]
    assert [record.getMessage()[:29] for record in caplog.records] == ["the shards also hold 1 file t"]


def test_a_home_folder_in_the_output_is_expanded_as_in_the_input(photos, tmp_path, monkeypatch):
    """extract.input expanded ~ and extract.output did not: extract.output='~/feats' made a folder named ~ in the
    working directory (which a later rm -rf ~ would not spare)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "home").mkdir()
    summary = extract(_spec(), _options(photos, "~/feats"))
    assert summary.images == 3 and not (tmp_path / "~").exists()
    assert len(dict(featx.read_features("~/feats"))) == 3
    assert (tmp_path / "home" / "feats" / "featx-manifest.jsonl").is_file()


def test_the_input_folder_as_output_is_refused_when_both_are_written_with_a_home_folder(photos, tmp_path, monkeypatch):
    """Once extract.output expanded ~, the check compared '~/photos' (not a folder as written) with its expansion and
    let featx's files into the user's photo folder."""
    monkeypatch.setenv("HOME", str(tmp_path))
    before = folder_state(photos)
    with pytest.raises(ArgumentError, match=r"^extract\.output: .*/photos is the input folder itself"):
        extract(_spec(), _options("~/photos", "~/photos"))
    assert folder_state(photos) == before


@pytest.mark.parametrize("linked", ["output", "input"])
def test_the_input_folder_as_output_through_a_link_is_refused(photos, tmp_path, linked):
    """abspath does not resolve links: extract.output=link-to-photos let featx's files into the photo folder."""
    (tmp_path / "link").symlink_to(photos)
    paths = {"input": photos, "output": photos, linked: tmp_path / "link"}
    before = folder_state(photos)
    with pytest.raises(ArgumentError, match=r"^extract\.output: .* is the input folder itself"):
        extract(_spec(), _options(paths["input"], paths["output"]))
    assert folder_state(photos) == before


@pytest.mark.parametrize("key", ["input", "output"])
def test_a_home_folder_of_no_user_is_named(photos, tmp_path, key):
    """Path.expanduser raised a raw RuntimeError ("Could not determine home directory")."""
    paths = {"input": str(photos), "output": str(tmp_path / "out"), key: "~featx-no-such-user/x"}
    pattern = rf"^extract\.{key}: '~featx-no-such-user/x' starts with '~featx-no-such-user', a user without a known "
    with pytest.raises(ArgumentError, match=pattern):
        extract(_spec(), _options(paths["input"], paths["output"]))
    assert not (tmp_path / "out").exists()


def test_an_output_folder_safetensors_cannot_open_is_refused_before_any_work(photos, tmp_path):
    """safetensors opens UTF-8 paths only: shards were written under a non-UTF-8 folder name, then refused as
    unreadable (advising to delete them), in this run and every rerun."""
    output = Path(os.fsdecode(bytes(tmp_path) + b"/o\xff"))
    with pytest.raises(ArgumentError, match=r"^extract\.output: '.*/o\\xff' is not valid UTF-8, and safetensors "):
        extract(_spec(), _options(photos, output))
    assert not output.exists()
    with pytest.raises(ArgumentError, match=r"^read_features\(\): output_dir: '.*/o\\xff' is not valid UTF-8"):
        featx.read_features(output)


def test_a_skipped_file_whose_name_is_not_utf8_is_logged(photos, tmp_path, capsys):
    """A log file (Hydra's extract.log) writes UTF-8: the name's stray byte failed the write ("--- Logging error ---"
    and a traceback on stderr) and the warning was lost."""
    (photos / os.fsdecode(b"bad\xff.png")).write_bytes(b"")
    handler = logging.FileHandler(tmp_path / "extract.log", encoding="utf-8")
    logger = logging.getLogger("featx.extract")
    logger.addHandler(handler)
    try:
        extract(_spec(), _options(photos, tmp_path / "out"))
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert "Logging error" not in capsys.readouterr().err
    assert "bad\\xff.png: unreadable image" in (tmp_path / "extract.log").read_text(encoding="utf-8")


# ---- settings of the user's process, tampered shards, output folders the input's pattern matches ----------------


def _half_a_jpeg() -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()[: len(buffer.getvalue()) // 2]


#: what Pillow says of an image past twice its default MAX_IMAGE_PIXELS (13400x13400 pixels)
BOMB_REASON = (
    "unreadable image (DecompressionBombError: Image size (179560000 pixels) exceeds limit of 178956970 pixels, "
    "could be decompression bomb DOS attack.)"
)


@pytest.mark.parametrize("workers", [0, 1])
def test_pillows_process_wide_settings_let_no_truncated_or_huge_image_through(photos, tmp_path, monkeypatch, workers):
    """A training script's ``ImageFile.LOAD_TRUNCATED_IMAGES = True`` (inherited by the DataLoader workers) stored
    the features of half a JPEG, and ``Image.MAX_IMAGE_PIXELS = None`` removed the bomb limit: both are skipped with
    the reason they get without the settings, which are the caller's again after the run."""
    (photos / "half.jpg").write_bytes(_half_a_jpeg())
    _png_header_only(photos / "bomb.png", 13400, 13400)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    summary = extract(_spec(), _options(photos, tmp_path / "out", workers=workers))
    skipped = {Path(e["path"]).name: e["skipped"] for e in _manifest(tmp_path / "out") if "skipped" in e}
    assert (summary.images, summary.skipped, sorted(skipped)) == (3, 2, ["bomb.png", "half.jpg"])
    assert skipped["bomb.png"] == BOMB_REASON
    assert re.fullmatch(
        r"unreadable image \(OSError: image file is truncated \(\d+ bytes not processed\)\)", skipped["half.jpg"]
    )
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True and Image.MAX_IMAGE_PIXELS is None


def test_a_huge_jpeg_is_refused_before_the_device_decoder_whatever_the_process_set(tmp_path, monkeypatch):
    """decode=gpu reads only a JPEG's header in the workers: with ``Image.MAX_IMAGE_PIXELS = None`` a 13400x13400
    JPEG header passed to the device decoder."""
    import io

    from featx.tasks.extract.device_decode import JpegFiles
    from featx.tasks.extract.transforms import image_transform

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buffer, format="JPEG")
    data = bytearray(buffer.getvalue())
    start = data.index(b"\xff\xc0")  # the frame header: its height and width follow the precision byte
    data[start + 5 : start + 9] = struct.pack(">HH", 13400, 13400)
    (tmp_path / "huge.jpg").write_bytes(bytes(data))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    transform = image_transform("center_crop", _spec(), [SIZE, SIZE])
    index, image, reason, _, _ = JpegFiles([tmp_path / "huge.jpg"], transform)[0]
    assert (index, image, reason) == (0, None, BOMB_REASON)


def _resave_first_shard(output: Path, change) -> Path:
    """The first shard rewritten with ``change(tensors, record)`` applied, its metadata otherwise kept."""
    return _resave_shard(_first_shard(output), change)


def _resave_shard(shard: Path, change) -> Path:
    """``shard`` rewritten with ``change(tensors, record)`` applied, its metadata otherwise kept."""
    from safetensors import safe_open

    with safe_open(str(shard), framework="pt") as handle:
        metadata, tensors = handle.metadata(), {name: handle.get_tensor(name) for name in handle.keys()}
    record = json.loads(metadata["featx_extract"])
    change(tensors, record)
    save_file(tensors, str(shard), metadata={**metadata, "featx_extract": json.dumps(record)})
    return shard


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (  # read_features raised IndexError; a resumed run wrote "shapes": {"c3": []} into the manifest
            lambda tensors, record: tensors.update(c3=torch.tensor(1.0)),
            "output 'c3' holds a single value, not a row for each of its 2 images",
        ),
        (
            lambda tensors, record: tensors.update(c3=tensors["c3"][:1]),
            "output 'c3' holds 1 rows for its 2 images",
        ),
        (  # TypeError: 'int' object is not iterable, from read_features and from a resumed run
            lambda tensors, record: record.update(skipped=5),
            "its skipped files are not a list",
        ),
    ],
    ids=["scalar", "rows-missing", "skipped-number"],
)
def test_a_tampered_shard_is_named_by_read_features_and_by_a_resumed_run(finished, photos, change, reason):
    shard = _resave_first_shard(finished, change)
    tail = f"is unreadable ({reason}); delete it and rerun featx-extract to redo its images"
    with pytest.raises(FeatxError) as read:
        list(featx.read_features(finished))
    assert str(read.value) == f"read_features(): the shard {shard} {tail}"
    manifest = (finished / "featx-manifest.jsonl").read_bytes()
    with pytest.raises(FeatxError) as resumed:
        extract(_spec(), _options(photos, finished))
    assert str(resumed.value) == f"extract.output: the shard {shard} {tail}"
    assert (finished / "featx-manifest.jsonl").read_bytes() == manifest  # refused before anything was rewritten


def test_an_output_folder_the_inputs_pattern_matches_is_left_out(tmp_path):
    """With extract.input='gl/*' extract.output=gl/feats, every rerun skipped gl/feats ("a folder the pattern
    matches") and wrote a new shard holding that skip alone; gl/*/* listed its featx-shards folder so."""
    folder = tmp_path / "gl"
    (folder / "sub").mkdir(parents=True)
    for index in range(3):
        _save_rgb(folder / f"p{index}.png", index)
    _save_rgb(folder / "sub" / "s.png", 3)
    output = folder / "feats"
    first = extract(_spec(), _options(f"{folder}/*", output))
    shards = sorted(path.name for path in (output / "featx-shards").iterdir())
    again = extract(_spec(), _options(f"{folder}/*", output))
    assert (first.images, first.skipped, again.processed) == (3, 1, 0)
    assert sorted(path.name for path in (output / "featx-shards").iterdir()) == shards
    assert [(path.name, why) for path, why in find_images(f"{folder}/*", exclude=output).skipped] == [
        ("sub", "a folder the pattern matches, not its files (a pattern takes the files it matches: add /* for them)")
    ]
    deeper = find_images(f"{folder}/*/*", exclude=output)
    assert (deeper.images, deeper.skipped) == ([folder / "sub" / "s.png"], [])


def test_input_and_output_folders_may_be_given_as_paths(photos, tmp_path):
    """``ExtractOptions(input=Path("photos"), output=...)`` was refused as "extract.input: missing"."""
    options = dataclasses.replace(_options(photos, tmp_path), input=photos, output=tmp_path / "out")
    summary = extract(_spec(), options)
    assert summary.images == 3
    assert [entry["path"] for entry in _manifest(tmp_path / "out")] == [str(photos / f"p{i}.png") for i in range(3)]


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ({"WORLD_SIZE": "1", "RANK": "1"}, r"RANK: 1 is not below WORLD_SIZE=1 \(ranks are 0 to 0\)"),
        ({"WORLD_SIZE": "1", "RANK": "x"}, r"RANK: 'x' is not a whole number"),
        ({"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "-1"}, r"LOCAL_RANK: -1 is below 0"),
        ({"WORLD_SIZE": "1", "RANK": "\u0660"}, "RANK: '\u0660' is not a whole number"),
        ({"WORLD_SIZE": "0_1"}, "WORLD_SIZE: '0_1' is not a whole number"),
    ],
)
def test_torchruns_variables_are_checked_for_a_single_process_too(photos, tmp_path, monkeypatch, environment, message):
    """docs/extract.md says 0 <= RANK < WORLD_SIZE is checked: RANK=1 WORLD_SIZE=1 ran as rank 0. int() took an
    Arabic-Indic zero as RANK and WORLD_SIZE=0_1 as whole numbers: both ran."""
    for variable in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(variable, raising=False)
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)
    before = folder_state(tmp_path)
    with pytest.raises(ArgumentError, match=f"^{message}"):
        extract(_spec(), _options(photos, tmp_path / "out"))
    assert folder_state(tmp_path) == before


# ---- the settings each shard was made with, the manifest's length, and shards whose rows interleave --------------


def _not_described(shard: Path, info: Path) -> str:
    return (
        f"the shard {shard} was not made with the settings {info} records (was that file edited, or copied from "
        "another folder?): its features are not read; extract again into a new folder, or rerun featx-extract with "
        "extract.overwrite=true to make the folder's features anew"
    )


@pytest.mark.parametrize(("key", "value"), [("seed", 1), ("model", "resnet34")])
def test_a_settings_file_edited_by_hand_is_refused_not_read_or_added_to(photos, tmp_path, key, value):
    """Shards carried only the folder's random collection: after a refusal naming ``differing: backbone.seed``, the
    settings file edited to the new seed (its collection kept) let a run with that seed resume, adding another
    network's features beside the first's, and read_features gave both networks' rows; a settings file naming
    another model read back without a word."""
    output = _extract_folder(photos, tmp_path / "out")
    info = output / "featx-extract.json"
    _edit_settings(output, lambda settings: settings["backbone"].update({key: value}))
    with pytest.raises(FeatxError) as read:
        list(featx.read_features(output))
    assert str(read.value) == f"read_features(): {_not_described(_shard(output, 1), info)}"
    if key != "seed":
        return
    _save_rgb(photos / "p9.png", 9)
    before = folder_state(output)
    with pytest.raises(FeatxError) as resumed:
        _extract_folder(photos, output, seed=1)
    assert str(resumed.value) == f"extract.output: {_not_described(_shard(output, 1), info)}"
    assert folder_state(output) == before
    _extract_folder(photos, output, seed=1, overwrite=True)  # the folder's features made anew, with seed 1 alone
    fresh = _stored(_extract_folder(photos, tmp_path / "fresh", seed=1))
    stored = _stored(output)
    assert sorted(stored) == sorted(fresh) == ["p0.png", "p1.png", "p2.png", "p9.png"]
    assert all(torch.equal(stored[name][out], fresh[name][out]) for name in fresh for out in ("c2", "c3"))


def test_a_shard_that_does_not_record_its_settings_is_refused(finished, photos):
    """A shard without the digest of its settings (an earlier featx's, or altered) is not this folder's for sure."""
    shard = _resave_first_shard(finished, lambda tensors, record: record.pop("settings_digest"))
    tail = (
        f"the shard {shard} does not record the settings it was made with (it was written by an earlier featx, or "
        "altered): its features are not read; extract again into a new folder, or rerun featx-extract with "
        "extract.overwrite=true to make the folder's features anew"
    )
    with pytest.raises(FeatxError) as read:
        list(featx.read_features(finished))
    assert str(read.value) == f"read_features(): {tail}"
    with pytest.raises(FeatxError) as resumed:
        extract(_spec(), _options(photos, finished))
    assert str(resumed.value) == f"extract.output: {tail}"
    assert extract(_spec(), _options(photos, finished, overwrite=True)).processed == 3
    assert len(list(featx.read_features(finished))) == 3


def test_a_huge_manifest_line_is_refused_without_reading_it_whole(finished):
    """A 1 GiB manifest line (a sparse file: ``truncate -s 1G featx-manifest.jsonl``) was read whole before its
    length was checked: 2.6 GB of memory and 24 s (under a memory limit, a raw MemoryError) for the error."""
    manifest = finished / "featx-manifest.jsonl"
    manifest.unlink()
    _sparse_file(manifest, 1 << 30)
    code = f"""
import resource
from pathlib import Path
import featx
import featx.tasks.extract.store  # imported before the limit
status = Path("/proc/self/status").read_text()
used = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmSize:"))) * 1024
resource.setrlimit(resource.RLIMIT_AS, (used + (512 << 20), resource.RLIM_INFINITY))
try:
    list(featx.read_features({str(finished)!r}))
except featx.FeatxError as error:
    print(error)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == (
        f"read_features(): {manifest} line 1 is not a featx-extract manifest entry (the line is too long); rerun the "
        "same featx-extract command to rebuild the manifest"
    ), result.stderr[-2000:]


def _cut_manifest(output: Path, cut: str) -> None:
    manifest = output / "featx-manifest.jsonl"
    lines = manifest.read_text().splitlines(keepends=True)
    if cut == "empty":
        manifest.write_bytes(b"")
    elif cut == "lines":
        manifest.write_text("".join(lines[:2]))
    elif cut == "added":
        manifest.write_text("".join(lines) + json.dumps({"path": "/zzz.png", "identity": None, "skipped": "x"}) + "\n")
    else:  # the settings file says nothing of the manifest's length
        info = output / "featx-extract.json"
        info.write_text(json.dumps({k: v for k, v in json.loads(info.read_text()).items() if k != "manifest_entries"}))


@pytest.mark.parametrize(
    ("cut", "message"),
    [
        ("empty", "{manifest} ends after 0 entries, and {info} records 3"),
        ("lines", "{manifest} ends after 2 entries, and {info} records 3"),
        ("added", "{manifest} line 4 is an entry past the 3 that {info} records"),
    ],
)
def test_a_manifest_cut_short_or_lengthened_is_refused(finished, cut, message):
    """An empty manifest, or one cut at a line boundary, read back as fewer rows (0 or 2 of 3) without a word."""
    manifest, info = finished / "featx-manifest.jsonl", finished / "featx-extract.json"
    _cut_manifest(finished, cut)
    with pytest.raises(FeatxError) as caught:
        list(featx.read_features(finished))
    assert str(caught.value) == (
        f"read_features(): {message.format(manifest=manifest, info=info)}: the manifest was cut short or altered, "
        "or another featx-extract run rewrote it while it was read; rerun the same featx-extract command to "
        "rebuild it"
    )


def test_a_folder_whose_run_is_making_its_features_anew_is_not_called_foreign(finished):
    """An overwrite run removes the settings file first and writes it again once its shards are made: a reader
    meanwhile was told the folder "is not a featx-extract output folder"."""
    (finished / "featx-extract.json").unlink()
    with pytest.raises(FeatxError) as caught:
        featx.read_features(finished)
    assert str(caught.value) == (
        f"read_features(): {finished} has no featx-extract.json beside its featx-shards: a featx-extract run on it is "
        "making its features anew (read again once the run has finished), or was stopped while it did (rerun it to "
        "finish)"
    )


def test_a_shard_removed_while_it_is_opened_is_a_featx_error(finished):
    """safetensors opens a shard, then torch maps it again by its name: a shard an overwrite run removed in between
    ended read_features on torch's raw RuntimeError ("unable to open file ... in read-only mode"). The shard is
    opened as read_features opens each shard, over and over (the whole read_features meets the window too seldom)."""
    shard = finished / "featx-shards" / "shard-r000-00001.safetensors"
    away = finished / "away"
    stop = threading.Event()

    def remove_and_put_back() -> None:
        while not stop.is_set():
            shard.rename(away)
            away.rename(shard)

    mover = threading.Thread(target=remove_and_put_back)
    mover.start()
    errors: Dict[str, int] = {}
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                with _open_shard(shard, "read_features()"):
                    pass
            except Exception as error:  # noqa: BLE001  # every error is counted by its type
                errors[type(error).__name__] = errors.get(type(error).__name__, 0) + 1
    finally:
        stop.set()
        mover.join()
    assert set(errors) <= {"FeatxError"}, errors


def test_a_manifest_removed_after_read_features_checked_the_folder_is_named(finished):
    """A run started on the folder between the call and the first row removes the manifest: that was Python's raw
    FileNotFoundError."""
    manifest = finished / "featx-manifest.jsonl"
    rows = featx.read_features(finished)
    manifest.unlink()
    with pytest.raises(FeatxError) as caught:
        next(rows)
    assert str(caught.value) == (
        f"read_features(): cannot open {manifest} (No such file or directory): a featx-extract run on the folder "
        "removes it while it works; read again once the run has finished"
    )


def test_a_manifest_whose_length_is_not_recorded_is_refused(finished, photos):
    manifest, info = finished / "featx-manifest.jsonl", finished / "featx-extract.json"
    _cut_manifest(finished, "unrecorded")
    with pytest.raises(FeatxError) as caught:
        featx.read_features(finished)  # a folder check: when called
    assert str(caught.value) == (
        f"read_features(): {info} does not record how many entries {manifest} holds (a featx-extract run on the "
        "folder has not finished, the settings file was edited, or the manifest copied in): read again once the run "
        "has finished, or rerun the same featx-extract command to rebuild the manifest"
    )
    assert extract(_spec(), _options(photos, finished)).processed == 0
    assert json.loads(info.read_text())["manifest_entries"] == 3 and len(list(featx.read_features(finished))) == 3


@pytest.mark.parametrize("entries", [-1, "3", True, 3.0])
def test_a_recorded_manifest_length_featx_never_writes_is_named(finished, entries):
    info = finished / "featx-extract.json"
    info.write_text(json.dumps({**json.loads(info.read_text()), "manifest_entries": entries}))
    with pytest.raises(FeatxError) as caught:
        featx.read_features(finished)
    assert str(caught.value).startswith(
        f"read_features(): {info} is not a featx-extract settings file (manifest_entries {entries!r} is not a "
        "number of entries)"
    )


def _interleaved(output: Path, shards: int, count: int) -> List[str]:
    """A folder of ``shards`` shards of rank 0 whose images interleave in path order (hash-named files added over
    several resumed runs), written by the store's own writer: image i holds [i, i] in its shard. Its paths."""
    from featx.tasks.extract import store

    paths = [f"/data/img{index:04d}.jpg" for index in range(count)]
    folder = store.FeatureStore(output)
    folder.prepare({"outputs": ["c5"], "dtype": "float32"}, "", False)
    for number in range(shards):
        mine = paths[number::shards]
        rows = torch.tensor([[float(paths.index(path))] * 2 for path in mine])
        folder.write_shard(0, number + 1, {"c5": rows}, [(path, (1, 1, 1)) for path in mine], [])
    folder.write_manifest({path: (1, 1, 1) for path in paths})
    return paths


def test_read_features_checks_each_shards_record_once_however_its_rows_interleave(tmp_path, monkeypatch):
    """Five or more shards of one rank whose images interleave in path order: every row reopened its shard (a few
    stay open) and parsed and checked its whole record again, 60 times slower (16,384 rows of 1,024-image shards:
    170 s)."""
    from featx.tasks.extract import store

    shards, count = 6, 60
    paths = _interleaved(tmp_path / "out", shards, count)
    open_shard, opened = store._open_shard, []
    monkeypatch.setattr(
        store, "_open_shard", lambda *args, **kwargs: (opened.append(args[0]), open_shard(*args, **kwargs))[1]
    )
    shard_files, parsed = store._shard_files, []
    monkeypatch.setattr(store, "_shard_files", lambda *args: (parsed.append(args), shard_files(*args))[1])
    rows = list(featx.read_features(tmp_path / "out"))
    assert [path for path, _ in rows] == paths
    assert [features["c5"].tolist() for _, features in rows] == [[float(index)] * 2 for index in range(count)]
    assert len(opened) == count  # each row reopened its shard: 6 in turn, 4 kept open
    assert len(parsed) == shards  # but each record was parsed and checked once


def test_a_shard_replaced_after_its_record_was_checked_is_checked_again(tmp_path):
    """The record of a shard closed and reopened is checked again when the file is not the one checked."""
    paths = _interleaved(tmp_path / "out", 6, 24)
    _interleaved(tmp_path / "other", 6, 24)  # another collection
    reading = featx.read_features(tmp_path / "out")
    assert [next(reading)[0] for _ in range(8)] == paths[:8]  # shards 1..6, 1, 2: shard 3 read and closed
    shard = _shard(tmp_path / "out", 3)
    shard.unlink()
    shutil.copyfile(_shard(tmp_path / "other", 1), shard)
    with pytest.raises(FeatxError, match=rf"^read_features\(\): the shard {re.escape(str(shard))} belongs to another"):
        next(reading)
