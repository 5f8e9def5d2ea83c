"""featx-extract: features equal the backbone's own, shards/manifest/resume/overwrite, bad input, torchrun, kill."""

from __future__ import annotations

import hashlib
import json
import re
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import torch
import torchvision
from helpers import stand_in_for_published
from PIL import Image, ImageOps
from safetensors import safe_open
from torchvision import transforms
from torchvision.models import ResNet18_Weights

import featx
from featx.models.meta_construction import construct_on_meta
from featx.models.published_weights import HALF_NORMALISED_MODELS
from featx.models.weights_enums import OFFLINE_VARIABLE
from featx.spec.apps import ExtractOptions
from featx.spec.config_files import backbone_names
from featx.tasks.extract.run import _settings, extract
from featx.tasks.extract.store import METADATA_KEY, FeatureStore
from featx.tasks.extract.transforms import image_transform, resolve_transform_name

BIN = Path(sys.executable).parent


def _save_image(path: Path, mode: str, size=(40, 52), seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = rng.integers(0, 256, (size[0], size[1], channels), dtype=np.uint8)
    Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode).save(path)


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return str(path)


@pytest.fixture()
def images(tmp_path) -> Path:
    """Five RGB images of different sizes, a grayscale and an RGBA one in a subfolder, a corrupt JPEG, a text file."""
    folder = tmp_path / "images"
    (folder / "more").mkdir(parents=True)
    for index in range(5):
        _save_image(folder / f"rgb{index}.png", "RGB", size=(40 + 3 * index, 52), seed=index)
    _save_image(folder / "more" / "gray.png", "L", seed=10)
    _save_image(folder / "more" / "alpha.png", "RGBA", seed=11)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated, not a JPEG")
    (folder / "notes.txt").write_text("not an image")
    return folder


def _options(images: Path, output: Path, **changes) -> ExtractOptions:
    settings = dict(
        input=str(images), output=str(output), size=[64, 64], batch_size=3, workers=0, shard_size=4, progress=False
    )
    settings.update(changes)
    return ExtractOptions(**settings)


def _spec(weights_file: str, **changes) -> featx.BackboneSpec:
    return featx.load_spec(
        "resnet18",
        overrides=["device=cpu", f"weights={weights_file}"] + [f"{key}={value}" for key, value in changes.items()],
    )


def _reference_features(spec: featx.BackboneSpec, paths: List[Path]) -> Dict[str, Dict[str, torch.Tensor]]:
    """The backbone applied to each image alone, through the documented center_crop transform at 64x64 written out
    with torchvision's own transforms (shorter side to 64 / 0.875, centre crop, ImageNet mean and std), not
    featx's transform code."""
    backbone = featx.build(spec).eval()
    transform = transforms.Compose(
        [
            transforms.Resize(int(64 / 0.875), antialias=True),
            transforms.CenterCrop(64),
            transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    features = {}
    with torch.no_grad():
        for path in paths:
            with Image.open(path) as image:
                batch = transform(image.convert("RGB")).unsqueeze(0)
            features[str(path.resolve())] = {name: t[0] for name, t in backbone(batch).items()}
    return features


def _all_shard_images(output: Path) -> List[str]:
    images = []
    for shard in FeatureStore(output).shards():
        with safe_open(str(shard), framework="pt") as handle:
            record = json.loads(handle.metadata()[METADATA_KEY])
        images += [entry[0] for entry in record["images"]] + [entry[0] for entry in record["skipped"]]
    return images


def test_features_equal_the_backbone_on_each_image_and_bad_files_are_listed(images, tmp_path, weights_file):
    spec = _spec(weights_file)
    summary = extract(spec, _options(images, tmp_path / "out", pooling="none", outputs=["c4", "c5"]))
    image_paths = sorted(p for p in images.rglob("*.png"))
    assert (summary.images, summary.skipped, summary.processed) == (7, 2, 9)

    expected = _reference_features(spec, image_paths)
    stored = dict(featx.read_features(tmp_path / "out"))
    assert sorted(stored) == sorted(expected)  # gray and RGBA converted; broken.jpg and notes.txt left out
    for path, features in stored.items():
        assert list(features) == ["c4", "c5"]
        for name in ("c4", "c5"):
            assert features[name].shape == expected[path][name].shape  # (256, 4, 4), (512, 2, 2)
            torch.testing.assert_close(features[name], expected[path][name], rtol=1e-4, atol=1e-5)

    manifest = [json.loads(line) for line in (tmp_path / "out" / "featx-manifest.jsonl").read_text().splitlines()]
    assert [entry["path"] for entry in manifest] == sorted(str(p.resolve()) for p in images.rglob("*") if p.is_file())
    skipped = {Path(entry["path"]).name: entry["skipped"] for entry in manifest if "skipped" in entry}
    assert skipped["notes.txt"] == "not an image file (extension '.txt')"
    assert skipped["broken.jpg"].startswith("unreadable image (OSError: ")  # a JPEG header, then garbage
    rows = [entry for entry in manifest if "skipped" not in entry]
    assert all(
        entry["shapes"] == {"c4": [256, 4, 4], "c5": [512, 2, 2]} and entry["dtype"] == "float32" for entry in rows
    )
    assert sorted((entry["shard"], entry["row"]) for entry in rows) == sorted(
        [("featx-shards/shard-r000-00001.safetensors", row) for row in range(4)]
        + [("featx-shards/shard-r000-00002.safetensors", row) for row in range(3)]
    )
    config = json.loads((tmp_path / "out" / "featx-extract.json").read_text())
    assert config["settings"]["backbone"]["model"] == "resnet18"
    assert config["format"] == "featx-extract/4" and config["manifest_entries"] == len(manifest) == 9
    assert re.fullmatch(r"[0-9a-f]{32}", config["collection"])
    # each shard records the BLAKE2b digest of the settings as JSON with sorted keys and no spaces (docs/extract.md)
    canonical = json.dumps(config["settings"], sort_keys=True, separators=(",", ":")).encode()
    for shard in FeatureStore(tmp_path / "out").shards():
        with safe_open(str(shard), framework="pt") as handle:
            record = json.loads(handle.metadata()[METADATA_KEY])
        assert record["collection"] == config["collection"]
        assert record["settings_digest"] == hashlib.blake2b(canonical).hexdigest()


def test_a_shard_record_stays_within_its_budget_and_reads_back(tmp_path, weights_file, monkeypatch):
    """Long paths in a big shard made a record past the size the reader takes (64 MiB; shard_size may be 1,000,000):
    the run wrote a shard it then refused, after all the work, and every rerun failed the same way. The writer
    starts a new shard at the record budget (made small here), whatever shard_size says."""
    monkeypatch.setattr("featx.tasks.extract.run.SHARD_RECORD_BUDGET", 700)
    folder = tmp_path / "images"
    folder.mkdir()
    paths = [folder / f"{index}{'x' * 150}.png" for index in range(7)]
    for index, path in enumerate(paths):
        _save_image(path, "RGB", seed=index)
    for index in range(4):  # skipped files are entries of a record too
        (folder / f"{index}{'y' * 150}.txt").write_text("not an image")
    extract(_spec(weights_file), _options(folder, tmp_path / "out", shard_size=1000, batch_size=3))
    shards = FeatureStore(tmp_path / "out").shards()
    assert len(shards) > 1
    for shard in shards:
        with safe_open(str(shard), framework="pt") as handle:
            record = json.loads(handle.metadata()[METADATA_KEY])
        assert len(json.dumps(record["images"])) + len(json.dumps(record["skipped"])) <= 700, shard.name
    assert sorted(path for path, _ in featx.read_features(tmp_path / "out")) == sorted(map(str, paths))


@pytest.mark.parametrize("pooling", ["avg", "max"])
def test_pooling_reduces_each_map_to_one_vector(images, tmp_path, weights_file, pooling):
    spec = _spec(weights_file)
    extract(spec, _options(images, tmp_path / "full", pooling="none", outputs=["c5"]))
    extract(spec, _options(images, tmp_path / "pooled", pooling=pooling, dtype="float16"))
    full = dict(featx.read_features(tmp_path / "full"))
    pooled = dict(featx.read_features(tmp_path / "pooled"))
    reduce = (lambda t: t.mean(dim=(1, 2))) if pooling == "avg" else (lambda t: t.amax(dim=(1, 2)))
    for path, features in pooled.items():
        assert list(features) == ["c2", "c3", "c4", "c5"] and features["c5"].dtype == torch.float16
        assert features["c5"].shape == (512,)
        torch.testing.assert_close(features["c5"], reduce(full[path]["c5"]).half())
    assert dict(featx.read_features(tmp_path / "pooled", outputs=["c3"]))[path]["c3"].shape == (128,)


def test_rerun_resumes_and_new_images_are_added_once(images, tmp_path, weights_file):
    spec, output = _spec(weights_file), tmp_path / "out"
    extract(spec, _options(images, output, workers=2))  # decoding in DataLoader worker processes
    assert extract(spec, _options(images, output, batch_size=2)).processed == 0  # batch size is not a setting
    _save_image(images / "rgb_new.png", "RGB", seed=99)
    summary = extract(spec, _options(images, output))
    assert (summary.processed, summary.images, summary.skipped) == (1, 8, 2)
    assert sorted(_all_shard_images(output)) == sorted(str(p.resolve()) for p in images.rglob("*") if p.is_file())


def test_other_settings_are_refused_and_overwrite_keeps_foreign_files(images, tmp_path, weights_file):
    output = tmp_path / "out"
    extract(_spec(weights_file), _options(images, output))
    (output / "my_notes.md").write_text("mine")
    (output / "featx-shards" / "keep.bin").write_bytes(b"mine too")
    # freezing changes training only: the features are the same, so the folder resumes
    assert extract(_spec(weights_file, frozen_stages=2), _options(images, output)).processed == 0
    other = _spec(weights_file, norm="eval")
    with pytest.raises(
        featx.ArgumentError,
        match=r"extract.output: .* holds features made with other settings "
        r"\(differing: backbone.norm\).*extract.overwrite=true",
    ):
        extract(other, _options(images, output))
    with pytest.raises(featx.ArgumentError, match=r"differing: pooling"):
        extract(_spec(weights_file), _options(images, output, pooling="max"))
    summary = extract(other, _options(images, output, overwrite=True))
    assert (summary.processed, summary.images) == (9, 7)
    assert (output / "my_notes.md").read_text() == "mine" and (output / "featx-shards" / "keep.bin").exists()
    assert json.loads((output / "featx-extract.json").read_text())["settings"]["backbone"]["norm"] == "eval"


def test_a_hub_cache_file_replaced_between_runs_is_other_settings(images, tmp_path, monkeypatch):
    """Published weights were recorded by name alone: with the torch hub's cached file replaced (another network
    copied there; the hubs check a file's hash only when they download it), a rerun added the new images' features
    from the other network to the folder, without a word."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv(OFFLINE_VARIABLE, "1")
    cached = tmp_path / "torch-home" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"  # the enum's file name
    cached.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet18().state_dict(), cached)
    stand_in_for_published(cached, monkeypatch)
    spec = featx.load_spec("resnet18", overrides=["device=cpu", "weights=IMAGENET1K_V1", "out_features=[c2]"])
    output = tmp_path / "out"
    extract(spec, _options(images, output))
    assert extract(spec, _options(images, output)).processed == 0  # the same file: resumed
    first = (output / "featx-extract.json").read_text()
    other = tmp_path / "other.pth"
    torch.save(torchvision.models.resnet18().state_dict(), other)  # another network under the same name
    other.replace(cached)
    stand_in_for_published(cached, monkeypatch)  # taken as the published file: its digest still tells them apart
    _save_image(images / "rgb_new.png", "RGB", seed=99)
    with pytest.raises(featx.ArgumentError, match=r"other settings \(differing: backbone\.weights_digest\)"):
        extract(spec, _options(images, output))
    assert (output / "featx-extract.json").read_text() == first


def test_read_features_of_an_unfinished_or_foreign_folder(tmp_path, images, weights_file):
    with pytest.raises(featx.FeatxError, match=r"has no featx-extract.json: it is not a featx-extract output folder"):
        list(featx.read_features(tmp_path))
    extract(_spec(weights_file), _options(images, tmp_path / "out"))
    (tmp_path / "out" / "featx-manifest.jsonl").rename(tmp_path / "manifest")
    with pytest.raises(featx.FeatxError, match=r"has no featx-manifest.jsonl: its run has not finished \(rerun"):
        list(featx.read_features(tmp_path / "out"))
    (tmp_path / "manifest").rename(tmp_path / "out" / "featx-manifest.jsonl")
    with pytest.raises(featx.ArgumentError, match=r"outputs \['p5'\] are not stored there; stored: c2, c3, c4, c5"):
        list(featx.read_features(tmp_path / "out", outputs=["p5"]))


def test_a_manifest_that_does_not_describe_its_shards_hands_out_nothing(tmp_path, images, weights_file):
    """Each manifest row is checked against the image its shard records at that row (a shard renamed, or written
    under a name the manifest still gives, must not pass off one image's features as another's)."""
    output = tmp_path / "out"
    extract(_spec(weights_file), _options(images, output, shard_size=2, batch_size=2))
    first, second = sorted((output / "featx-shards").iterdir())[:2]
    first.rename(tmp_path / "swap")
    second.rename(first)
    (tmp_path / "swap").rename(second)
    with pytest.raises(featx.FeatxError) as caught:
        list(featx.read_features(output))
    assert re.search(
        r"read_features\(\): .*featx-manifest.jsonl line 2 gives '.*more/alpha.png' \(\[\d+, \d+, \d+\]\) at row 0 of "
        r"featx-shards/shard-r000-00001.safetensors, which holds the features of '.*rgb0.png' \(\[\d+, \d+, \d+\]\) "
        r"there: the manifest does not describe the shards; rerun the same featx-extract command to rebuild it",
        str(caught.value),
    ), str(caught.value)


def test_a_resumed_run_removes_the_manifest_until_it_ends(tmp_path, images, weights_file):
    """A run killed midway leaves no manifest to misread: the next read says the run has not finished."""
    output = tmp_path / "out"
    extract(_spec(weights_file), _options(images, output))
    store = FeatureStore(output)
    store.prepare(store.settings(), "", overwrite=False)  # what a resumed run does before its first shard
    assert not (output / "featx-manifest.jsonl").exists()
    with pytest.raises(featx.FeatxError, match=r"has no featx-manifest.jsonl: its run has not finished"):
        list(featx.read_features(output))
    assert extract(_spec(weights_file), _options(images, output)).images == 7


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("empty", r"extract.input: the folder '.*empty' holds no files"),
        ("texts", r"extract.input: '.*texts' holds no image files \(1 other files\)"),
        ("images/*.tif", r"extract.input: the pattern '.*\*.tif' matches no files"),
        ("missing", r"extract.input: '.*missing' is neither a folder nor a glob pattern"),
    ],
)
def test_inputs_without_images_are_refused(tmp_path, images, weights_file, source, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("x")
    with pytest.raises(featx.ArgumentError, match=message):
        extract(_spec(weights_file), _options(tmp_path / source, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_a_glob_selects_files(images, tmp_path, weights_file):
    summary = extract(_spec(weights_file), _options(f"{images}/**/*.png", tmp_path / "out"))
    assert (summary.images, summary.skipped) == (7, 0)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"pooling": "mean"}, "extract.pooling: unknown 'mean' \\(valid: none, avg, max\\)$"),
        ({"dtype": "int8"}, "extract.dtype: unknown 'int8' \\(valid: float32, float16, bfloat16\\)$"),
        ({"transform": "crop"}, r"extract.transform: unknown 'crop' \(valid: auto, weights, center_crop, resize\)"),
        ({"batch_size": 0}, r"extract.batch_size: must be an integer in 1..4096, got 0"),
        ({"outputs": ["c6"]}, r"extract.outputs: resnet18 has no output 'c6' .*\(outputs: c2, c3, c4, c5\)"),
        ({"size": [64]}, r"extract.size: expected \[height, width\] of integers in 1..16384, got \[64\]"),
        ({"transform": "weights"}, r"extract.transform: 'weights' needs backbone.weights to name published weights"),
        ({"device": "meta"}, r"backbone.device: 'meta' computes no values"),
    ],
)
def test_bad_options_are_refused_with_the_key_named(images, tmp_path, weights_file, changes, message):
    spec = _spec(weights_file, **{k: v for k, v in changes.items() if k == "device"})
    options = {k: v for k, v in changes.items() if k != "device"}
    with pytest.raises(featx.ArgumentError, match=message):
        extract(spec, _options(images, tmp_path / "out", **options))


def test_a_size_too_small_for_the_backbone_is_refused_before_the_output_is_made(images, tmp_path):
    spec = featx.load_spec("alexnet", overrides=["device=cpu"])
    with pytest.raises(
        featx.ArgumentError,
        match=r"^extract.size: the center_crop transform makes 8x8 inputs: featx backbone 'alexnet': the input is too "
        r"small for stage 'c3' \(.*\); give a larger input$",
    ):
        extract(spec, _options(images, tmp_path / "out", size=[8, 8]))
    assert not (tmp_path / "out").exists()  # so a run with a larger size starts afresh, no overwrite needed


def test_auto_transform_is_the_weights_own_when_they_are_torchvisions(weights_file):
    named = featx.load_spec("resnet18", overrides=["device=cpu", "weights=IMAGENET1K_V1"])
    assert resolve_transform_name("auto", named) == "weights"
    transform = image_transform("auto", named, [64, 64])
    assert repr(transform) == repr(ResNet18_Weights.IMAGENET1K_V1.transforms())
    assert resolve_transform_name("auto", _spec(weights_file)) == "center_crop"  # a file: no transforms known


#: torchvision's models whose builder turns on transform_input with published weights
HALF_NORMALISED = ("googlenet", "inception_v3")


def _distinct_presets() -> List[tuple]:
    """(model, weights member) of each distinct evaluation preset torchvision publishes (sizes, interpolation, mean,
    std), for the packaged specs of those models whose stages take the preset's output as it is."""
    packaged, found = set(backbone_names()), {}
    for model in torchvision.models.list_models(module=torchvision.models):
        for member in torchvision.models.get_model_weights(model) if model in packaged else []:
            if model in HALF_NORMALISED:  # see test_the_weights_transform_feeds_the_stages_what_torchvisions_...
                continue
            found.setdefault(repr(member.transforms()), (model, member.name))
    return sorted(found.values())


@pytest.mark.parametrize("model, member", _distinct_presets())
def test_the_weights_transform_is_torchvisions_preset_on_images_and_tensors(model, member):
    """extract.transform=weights hands the GPU decoder the preset's steps apart (per image, then per batch): together
    they give what the preset itself gives, bit for bit, for 8-bit tensors, float tensors and Pillow images."""
    preset = torchvision.models.get_model_weights(model)[member].transforms()
    transform = image_transform("weights", featx.load_spec(model, overrides=[f"weights={member}"]), [64, 64])
    pixels = (np.random.default_rng(0).random((70, 90, 3)) * 255).astype(np.uint8)
    eight_bit = torch.from_numpy(pixels).permute(2, 0, 1).contiguous()
    for image in (eight_bit, eight_bit.float() / 255, Image.fromarray(pixels)):
        assert torch.equal(transform(image), preset(image))
    steps = transform.tensor_steps  # type: ignore[attr-defined]
    stacked = steps.per_batch(torch.stack([steps.per_image(eight_bit), steps.per_image(eight_bit.flip(-1))]))
    assert torch.equal(stacked, torch.stack([preset(eight_bit), preset(eight_bit.flip(-1))]))


def test_the_models_whose_forward_renormalises_their_input_are_known():
    """Every torchvision classifier with a transform_input switch (a new one would feed its stages wrong inputs)."""
    found = []
    for model in torchvision.models.list_models(module=torchvision.models):
        classifier, _ = construct_on_meta(model)
        if hasattr(classifier, "transform_input"):
            found.append(model)
    assert found == list(HALF_NORMALISED) == list(HALF_NORMALISED_MODELS)


@pytest.mark.parametrize("model", HALF_NORMALISED)
def test_the_weights_transform_feeds_the_stages_what_torchvisions_forward_makes_of_the_preset(model):
    """GoogLeNet and Inception-v3 turn their preset's ImageNet-normalised input into (x - 0.5) / 0.5 in their forward
    (transform_input, on with published weights), which featx's stages skip: the weights transform gives that input
    (torchvision's own _transform_input is the reference)."""
    member = torchvision.models.get_model_weights(model).DEFAULT
    with torch.device("meta"):
        classifier = torchvision.models.get_model(model, transform_input=True, init_weights=False)
    expected = lambda image: classifier._transform_input(member.transforms()(image).unsqueeze(0))[0]  # noqa: E731
    transform = image_transform("auto", featx.load_spec(model, overrides=["weights=DEFAULT"]), [64, 64])
    pixels = (np.random.default_rng(0).random((70, 90, 3)) * 255).astype(np.uint8)
    eight_bit = torch.from_numpy(pixels).permute(2, 0, 1).contiguous()
    for image in (eight_bit, eight_bit.float() / 255, Image.fromarray(pixels)):
        torch.testing.assert_close(transform(image), expected(image), rtol=0, atol=1e-6)
    steps = transform.tensor_steps  # type: ignore[attr-defined]
    torch.testing.assert_close(steps.per_batch(steps.per_image(eight_bit)), expected(eight_bit), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["center_crop", "resize"])
def test_imagenet_normalisation_is_refused_for_weights_trained_half_normalised(name, weights_file):
    spec = featx.load_spec("googlenet", overrides=["weights=DEFAULT"])
    message = (
        f"extract.transform: {name} normalises with ImageNet's mean and std, and googlenet's published weights "
        "(DEFAULT) take images normalised with mean = std = 0.5"
    )
    with pytest.raises(featx.ArgumentError, match=re.escape(message)):
        image_transform(name, spec, [64, 64])
    image_transform(name, featx.load_spec("googlenet", overrides=[f"weights={weights_file}"]), [64, 64])  # a file


def _calibrated_googlenet() -> torch.nn.Module:
    """A seeded GoogLeNet (with its auxiliary heads, as torchvision's published file holds them) whose BatchNorm
    statistics are those of one batch of noise, so its maps keep unit scale to the last stage (with its own init and
    no statistics they shrink to about 1e-11, where any input gives the same features within a tolerance)."""
    torch.manual_seed(0)
    model = torchvision.models.googlenet(aux_logits=True, init_weights=False)
    for layer in model.modules():
        if isinstance(layer, torch.nn.BatchNorm2d):
            layer.momentum = 1.0
    with torch.no_grad():
        model.train()(torch.randn(2, 3, 224, 224))
    return model.eval()


def test_googlenet_features_equal_torchvisions_pretrained_model(tmp_path, monkeypatch):
    """featx-extract with GoogLeNet's published weights (a file saved under the enum's name in a temporary
    TORCH_HOME) stores what torchvision's own pretrained model computes at inception5b from its own preset."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv(OFFLINE_VARIABLE, "1")
    member = torchvision.models.GoogLeNet_Weights.DEFAULT
    cached = tmp_path / "torch-home" / "hub" / "checkpoints" / Path(member.url).name
    cached.parent.mkdir(parents=True)
    torch.save(_calibrated_googlenet().state_dict(), cached)
    stand_in_for_published(cached, monkeypatch)
    folder = tmp_path / "images"
    folder.mkdir()
    _save_image(folder / "one.png", "RGB", size=(60, 80), seed=3)
    spec = featx.load_spec("googlenet", overrides=["device=cpu", "weights=DEFAULT"])
    extract(spec, _options(folder, tmp_path / "out", outputs=["c5"]))
    [(_, stored)] = list(featx.read_features(tmp_path / "out"))

    reference = torchvision.models.googlenet(weights=member).eval()  # transform_input on, as torchvision builds it
    maps = {}
    reference.inception5b.register_forward_hook(lambda module, inputs, output: maps.update(c5=output))
    with torch.no_grad(), Image.open(folder / "one.png") as image:
        reference(member.transforms()(image.convert("RGB")).unsqueeze(0))
    expected = maps["c5"].mean(dim=(2, 3))[0]
    assert expected.abs().max() > 0.1  # features worth comparing
    torch.testing.assert_close(stored["c5"], expected, rtol=1e-4, atol=1e-4)


def _run_app(*args: str, launcher=(), cwd=None) -> subprocess.Popen:
    command = [*launcher, *args] if launcher else [str(BIN / "featx-extract"), *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd)


@pytest.mark.slow
def test_torchrun_two_ranks_write_disjoint_shards_and_one_manifest(images, tmp_path, weights_file):
    args = [
        f"backbone.weights={weights_file}",
        "backbone=resnet18",
        f"extract.input={images}",
        "extract.size=[64,64]",
        "extract.workers=0",
        "extract.shard_size=2",
        "extract.progress=false",
        f"hydra.run.dir={tmp_path / 'hydra'}",
    ]
    launcher = (
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "featx.cli.extract",
    )
    process = _run_app(*args, f"extract.output={tmp_path / 'two'}", launcher=launcher)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert "holds features of 7 images, 2 skipped" in out
    shards = [shard.name for shard in FeatureStore(tmp_path / "two").shards()]
    assert any(name.startswith("shard-r000") for name in shards) and any(
        name.startswith("shard-r001") for name in shards
    )
    everything = sorted(str(p.resolve()) for p in images.rglob("*") if p.is_file())
    assert sorted(_all_shard_images(tmp_path / "two")) == everything  # each file once, none missing

    extract(_spec(weights_file), _options(images, tmp_path / "one"))
    one = dict(featx.read_features(tmp_path / "one"))
    two = dict(featx.read_features(tmp_path / "two"))
    assert sorted(one) == sorted(two)
    for path in one:
        for name in one[path]:
            torch.testing.assert_close(two[path][name], one[path][name], rtol=1e-4, atol=1e-5)


def _run_until_its_first_shard(tmp_path: Path, weights_file: str, images: int) -> tuple:
    """(input folder, output folder, the app's process) of a featx-extract run over ``images`` small images, one
    shard of two written (the app still running)."""
    folder = tmp_path / "many"
    folder.mkdir()
    for index in range(images):
        _save_image(folder / f"{index:03d}.png", "RGB", size=(32, 32), seed=index)
    output = tmp_path / "out"
    process = _run_app(
        "backbone=resnet18",
        f"backbone.weights={weights_file}",
        f"extract.input={folder}",
        f"extract.output={output}",
        "extract.size=[64,64]",
        "extract.batch_size=1",
        "extract.shard_size=2",
        "extract.workers=0",
        "extract.progress=false",
        f"hydra.run.dir={tmp_path / 'hydra'}",
    )
    deadline = time.monotonic() + 120
    while not FeatureStore(output).shards() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)
    return folder, output, process


@pytest.mark.slow
def test_killed_run_resumes_with_every_image_exactly_once(tmp_path, weights_file):
    folder, output, process = _run_until_its_first_shard(tmp_path, weights_file, 240)
    with pytest.raises(featx.ArgumentError, match="is in use by another featx-extract run"):
        with FeatureStore(output).exclusive():  # the running app holds the folder
            pass
    process.send_signal(signal.SIGKILL)
    process.communicate()
    written = _all_shard_images(output)
    assert 0 < len(written) < 240, "the run was to be killed after its first shard, before its end"
    assert not (output / "featx-manifest.jsonl").exists()

    summary = extract(_spec(weights_file), _options(folder, output))  # the killed run's lock went with it
    assert summary.processed == 240 - len(written) and summary.images == 240
    assert sorted(_all_shard_images(output)) == sorted(str(p.resolve()) for p in folder.iterdir())
    assert not [p for p in (output / "featx-shards").iterdir() if p.name.endswith(".partial")]


def test_ctrl_c_ends_a_run_with_one_line_and_whole_shards(tmp_path, weights_file):
    _, output, process = _run_until_its_first_shard(tmp_path, weights_file, 600)  # many: a busy machine is slow
    assert process.poll() is None, "the run was to be stopped after its first shard, before its end"
    process.send_signal(signal.SIGINT)
    _, errors = process.communicate(timeout=120)
    assert process.returncode == 130 and errors.strip().splitlines()[-1] == "featx-extract: interrupted", errors
    assert "Traceback" not in errors
    assert 0 < len(_all_shard_images(output)) < 600
    assert not [p for p in (output / "featx-shards").iterdir() if p.name.endswith(".partial")]


def test_settings_holding_tuples_match_what_was_recorded(tmp_path):
    """A spec built in Python may hold tuples; featx-extract.json reads them back as lists: still the same run."""
    store = FeatureStore(tmp_path / "out")
    settings = {"size": (64, 64), "outputs": ("c5",), "backbone": {"input_size": (224, 224)}}
    (tmp_path / "out").mkdir()
    store.prepare(settings, "", overwrite=False)
    store.check_settings(settings, overwrite=False)  # no refusal
    with pytest.raises(featx.ArgumentError, match=r"differing: size"):
        store.check_settings({**settings, "size": (32, 32)}, overwrite=False)


def test_a_folder_another_run_writes_to_is_refused_and_left_alone(images, tmp_path, weights_file):
    output = tmp_path / "out"
    extract(_spec(weights_file, seed=1), _options(images, output))
    partial = (
        output / "featx-shards" / ".shard-r000-00001.safetensors.abc_12.partial"
    )  # the other run's shard being written
    partial.write_bytes(b"half")
    with FeatureStore(output).exclusive():
        with pytest.raises(
            featx.ArgumentError,
            match=rf"extract.output: {output} is in use by another "
            r"featx-extract run .*wait for that run to finish",
        ):
            extract(_spec(weights_file), _options(images, output))
        assert partial.exists() and FeatureStore(output).settings()["backbone"]["seed"] == 1
    assert extract(_spec(weights_file, seed=1), _options(images, output)).processed == 0  # free again
    assert extract(_spec(weights_file), _options(images, output, overwrite=True)).images == 7  # and it cleans up
    assert not partial.exists()


def test_an_output_that_cannot_be_created_is_named(images, tmp_path, weights_file):
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(featx.ArgumentError, match=rf"extract.output: cannot create {tmp_path / 'afile' / 'out'}: "):
        extract(_spec(weights_file), _options(images, tmp_path / "afile" / "out"))


def test_app_reports_bad_input_without_a_traceback(tmp_path):
    (tmp_path / "empty").mkdir()
    process = _run_app(
        f"extract.input={tmp_path / 'empty'}",
        f"extract.output={tmp_path / 'out'}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
    )
    out, err = process.communicate(timeout=120)
    assert process.returncode == 1
    assert "featx-extract: error: extract.input: the folder" in err and "Traceback" not in err
    process = _run_app(f"extract.input={tmp_path / 'empty'}", f"hydra.run.dir={tmp_path / 'hydra'}", cwd=tmp_path)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 1
    assert "featx-extract: error: extract.output: missing; give it on the command line" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "hydra"]  # nothing written for '???'


def test_overwrite_with_the_same_settings_resumes_and_orphan_shards_are_left_alone(images, tmp_path, weights_file):
    spec, output = _spec(weights_file), tmp_path / "out"
    extract(spec, _options(images, output))
    assert extract(spec, _options(images, output, overwrite=True)).processed == 0  # nothing redone
    (output / "featx-extract.json").unlink()  # featx never leaves this (it deletes the settings last)
    before = {p: p.read_bytes() for p in output.rglob("*") if p.is_file() and p.name != ".featx-extract.lock"}
    for overwrite in (False, True):
        with pytest.raises(
            featx.ArgumentError,
            match=r"holds featx-manifest.jsonl, featx-config.yaml, featx-shards but no featx-extract.json .*alone",
        ):
            extract(spec, _options(images, output, overwrite=overwrite))
    assert {p: p.read_bytes() for p in output.rglob("*") if p.is_file() and p.name != ".featx-extract.lock"} == before


def test_an_unreadable_shard_is_named(images, tmp_path, weights_file):
    spec, output = _spec(weights_file), tmp_path / "out"
    extract(spec, _options(images, output))
    shard = FeatureStore(output).shards()[0]
    shard.write_bytes(b"")
    with pytest.raises(featx.FeatxError, match=rf"the shard {shard} is unreadable .*delete it and rerun"):
        extract(spec, _options(images, output))


def test_an_output_that_is_a_file_is_refused(images, tmp_path, weights_file):
    (tmp_path / "out").write_text("mine")
    with pytest.raises(featx.ArgumentError, match=r"extract.output: .*out exists and is not a folder"):
        extract(_spec(weights_file), _options(images, tmp_path / "out"))
    assert (tmp_path / "out").read_text() == "mine"


def test_photos_are_turned_upright_by_their_exif_orientation(tmp_path, weights_file):
    folder = tmp_path / "photos"
    folder.mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (40, 64, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.fromarray(pixels).save(folder / "tagged.jpg", exif=exif, quality=95)
    with Image.open(folder / "tagged.jpg") as stored:
        stored.transpose(Image.Transpose.ROTATE_270).save(folder / "upright.png")
    extract(_spec(weights_file), _options(folder, tmp_path / "out", pooling="none", outputs=["c2"]))
    features = {Path(path).name: maps["c2"] for path, maps in featx.read_features(tmp_path / "out")}
    torch.testing.assert_close(features["tagged.jpg"], features["upright.png"], rtol=1e-4, atol=1e-5)


def _exif_with_a_damaged_tag(orientation: int) -> bytes:
    """An EXIF block (little-endian TIFF) holding ``orientation`` and an XResolution written as text where the
    standard has a rational: readable, but Pillow cannot write it back."""
    entries = [(0x0112, 3, 1, struct.pack("<HH", orientation, 0)), (0x011A, 2, 4, b"abc\x00")]
    directory = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHI", tag, kind, count) + value for tag, kind, count, value in entries
    )
    return b"Exif\x00\x00II*\x00" + struct.pack("<I", 8) + directory + struct.pack("<I", 0)


def test_a_photo_with_a_damaged_exif_tag_is_still_turned_upright_not_skipped(tmp_path, weights_file):
    """ImageOps.exif_transpose rewrites the whole EXIF block after turning the image, and failed on a damaged tag
    that has nothing to do with the orientation: the photo was skipped as unreadable (for good), while the GPU
    decoder, which reads the orientation alone, kept it."""
    folder = tmp_path / "photos"
    folder.mkdir()
    pixels = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 64, 3), dtype=np.uint8))
    pixels.save(folder / "damaged.jpg", exif=_exif_with_a_damaged_tag(6), quality=95)
    with Image.open(folder / "damaged.jpg") as stored:
        with pytest.raises(TypeError):
            ImageOps.exif_transpose(stored)
        stored.transpose(Image.Transpose.ROTATE_270).save(folder / "upright.png")
    summary = extract(_spec(weights_file), _options(folder, tmp_path / "out", pooling="none", outputs=["c2"]))
    features = {Path(path).name: maps["c2"] for path, maps in featx.read_features(tmp_path / "out")}
    assert summary.skipped == 0
    torch.testing.assert_close(features["damaged.jpg"], features["upright.png"], rtol=1e-4, atol=1e-5)


def test_named_torchvision_weights_are_recorded_resolved(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv(OFFLINE_VARIABLE, "1")
    cached = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"  # the file name torchvision's enum gives
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    stand_in_for_published(cached, monkeypatch)
    spec = featx.load_spec("resnet18", overrides=["device=cpu", "weights=DEFAULT"])
    options = ExtractOptions(input="x", output="y")
    settings = _settings(spec, ["c5"], options, image_transform("auto", spec, [224, 224]))
    assert settings["backbone"]["weights"] == "ResNet18_Weights.IMAGENET1K_V1"
    assert settings["backbone"]["weights_file"] == "checkpoints/resnet18-f37072fd.pth"


def test_the_app_counts_one_image_in_the_singular(tmp_path, weights_file):
    folder = tmp_path / "one"
    folder.mkdir()
    _save_image(folder / "only.png", "RGB", size=(40, 52), seed=1)
    process = _run_app(
        "backbone=resnet18",
        f"backbone.weights={weights_file}",
        "backbone.device=cpu",
        f"extract.input={folder}",
        f"extract.output={tmp_path / 'out'}",
        "extract.size=[64,64]",
        "extract.workers=0",
        "extract.progress=false",
        f"hydra.run.dir={tmp_path / 'hydra'}",
    )
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert f"featx-extract: {tmp_path / 'out'} holds features of 1 image; this run processed 1 file at " in out
    assert re.search(r"this run processed 1 file at \d+\.\d files/s\n", out), out  # skipped files count too


@pytest.mark.parametrize("norm", ["frozen", "eval", "train"])
def test_frozen_stages_do_not_change_the_features(images, tmp_path, weights_file, norm):
    """Why frozen_stages is left out of the recorded settings: the eval-mode features are the same bit for bit."""
    stored = {}
    for frozen in (0, 4):
        output = tmp_path / f"frozen{frozen}"
        extract(_spec(weights_file, norm=norm, frozen_stages=frozen), _options(images, output))
        stored[frozen] = dict(featx.read_features(output))
    assert stored[0].keys() == stored[4].keys() and stored[0]
    for path, features in stored[0].items():
        assert all(torch.equal(features[name], stored[4][path][name]) for name in features), path
