"""timm's pretrained weights as the ``weights`` key names them (``DEFAULT``, a tag such as ``fb_in22k``): the file
they are cached in — the Hugging Face hub cache for weights timm hosts there (``model.safetensors``, else
``pytorch_model.bin``), the torch hub cache for the few published by URL only — downloaded only when absent, and
the evaluation transform of their pretrained config.

Example::

    path = timm_weights_file("resnet18", "a1_in1k")
    # ~/.cache/huggingface/hub/models--timm--resnet18.a1_in1k/snapshots/<revision>/model.safetensors
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from featx.errors import WeightsError, first_line
from featx.models.timm_models import TIMM_PREFIX, pretrained_config, timm_module
from featx.models.weights_enums import OFFLINE_VARIABLE, cached_or_downloaded, cached_weights_path, offline
from featx.spec.keys import key_path

#: the files timm's hub loader reads, in its order of preference
_HUB_FILES = ("model.safetensors", "pytorch_model.bin")


def timm_weights_id(name: str, tag: str) -> str:
    """The weights ``tag`` of ``name`` as timm names them (``timm:resnet18.a1_in1k``); SpecError if unknown."""
    return f"{TIMM_PREFIX}{name}.{pretrained_config(name, tag).tag}"


def _unreferenced_snapshot(cache: Path) -> Optional[str]:
    """What to do where the hub cache folder ``cache`` holds a weights file in a snapshot that its ``refs/main`` does
    not name (missing, or not exactly the revision): the hub cache finds a file only through it. None if it holds
    no such file. refs/main's content is not shown (it is not featx's file)."""
    files = [path for name in _HUB_FILES for path in sorted(cache.glob(f"snapshots/*/{name}")) if path.is_file()]
    if not files:
        return None
    refs = cache / "refs" / "main"
    return (
        f"{files[0]} is cached, but {refs} does not name its revision: write {files[0].parent.name} into it (the hub "
        "cache reads it exactly, without a line break)"
    )


def _placement(repo: str) -> str:
    """How to put the weights of Hugging Face hub repo ``repo`` into the hub cache by hand (said once fetching them
    failed), or what keeps the cache from finding a file already there (:func:`_unreferenced_snapshot`)."""
    import huggingface_hub  # a dependency of timm

    cache = Path(huggingface_hub.constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"
    return _unreferenced_snapshot(cache) or (
        f"Place it in the Hugging Face hub cache at {cache} (get it from https://huggingface.co/{repo}, e.g. "
        f"hf download {repo} {_HUB_FILES[0]}; HF_HUB_CACHE moves the cache)"
    )


def _hub_file(repo: str, label: str) -> Path:
    """The cached file of Hugging Face hub repo ``repo``, downloaded if absent (unless offline)."""
    import huggingface_hub  # a dependency of timm
    from huggingface_hub.utils import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    for filename in _HUB_FILES:
        cached = huggingface_hub.try_to_load_from_cache(repo, filename)
        if isinstance(cached, str):
            return Path(cached)
    if offline():
        raise WeightsError(
            f"{key_path('weights')}: {label} is not in the Hugging Face hub cache and {OFFLINE_VARIABLE} forbids "
            f"downloading. {_placement(repo)}"
        )
    failure: Optional[Exception] = None
    for filename in _HUB_FILES:
        try:
            return Path(huggingface_hub.hf_hub_download(repo, filename))
        except (HfHubHTTPError, OSError, ValueError) as error:
            failure = error
            hub_lacks_file = isinstance(error, EntryNotFoundError) and not isinstance(error, LocalEntryNotFoundError)
            if not hub_lacks_file:  # no connection: the next file name would fail the same way
                break
    reason = first_line(failure)
    raise WeightsError(
        f"{key_path('weights')}: {label} is not in the Hugging Face hub cache and could not be downloaded "
        f"({type(failure).__name__}: {reason}). {_placement(repo)}"
    )


def timm_weights_file(name: str, tag: str) -> Path:
    """The local file of timm's weights ``tag`` of ``name``, fetched into its cache if absent (unless offline)."""
    config = pretrained_config(name, tag)
    label = f"{TIMM_PREFIX}{name}.{config.tag}"
    if config.hf_hub_id:
        return _hub_file(config.hf_hub_id, label)
    if config.url:
        # timm's own loader checks no hash of these files (their names need not end in one)
        return cached_or_downloaded(config.url, cached_weights_path(config.url), label, hash_prefix=None)
    raise WeightsError(
        f"{key_path('weights')}: {label} has neither a Hugging Face hub repo nor a URL in timm's pretrained config; "
        "give a local .pth/.safetensors path instead"
    )


def timm_weights_transform(name: str, tag: str) -> Callable[[Any], Any]:
    """The evaluation transform of timm's weights ``tag`` of ``name`` (resize, crop, normalise as timm evaluates
    them: ``timm.data.create_transform`` of the pretrained config)."""
    data: Any = timm_module().data
    config = data.resolve_data_config({}, pretrained_cfg=pretrained_config(name, tag).to_dict())
    return data.create_transform(**config, is_training=False)
