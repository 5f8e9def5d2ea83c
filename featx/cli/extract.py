"""The ``featx-extract`` app: the configured backbone's features of every image in a folder or glob, stored as
safetensors shards plus a manifest (see :mod:`featx.tasks.extract.store`); resumable and torchrun-aware.

Examples::

    featx-extract backbone=resnet50 extract.input=photos/ extract.output=feats/
    featx-extract backbone=resnet50_fpn extract.input='photos/**/*.png' extract.output=feats/ extract.pooling=none
    torchrun --nproc_per_node=2 -m featx.cli.extract backbone=resnet50 extract.input=photos/ extract.output=feats/
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

import featx
from featx.cli.app import app_task, run_app
from featx.cli.errors import fail, reported_errors
from featx.cli.output import reader_may_stop
from featx.spec.apps import ExtractAppConfig, ExtractOptions
from featx.spec.config_files import config_dir

APP = "featx-extract"


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="extract")
@app_task(APP, ExtractAppConfig)
def run(cfg: DictConfig) -> None:
    """Extract ``cfg.backbone``'s features as ``cfg.extract`` says."""
    from featx.tasks.extract.run import extract  # torch: imported by a job only (not --help, -sc, ...)

    options = ExtractOptions(**OmegaConf.to_container(cfg.extract, resolve=True))  # type: ignore[arg-type]
    for key in ("input", "output"):
        if getattr(options, key) == "-":  # the usual "standard input/output" of a command line: featx reads folders
            fail(
                APP,
                f"extract.{key}: '-' would mean standard {key}, which featx-extract does not use; give a folder (./-)",
            )
    with reported_errors(APP):
        summary = extract(featx.load_spec(cfg.backbone), options, OmegaConf.to_yaml(cfg, resolve=True))
    if summary.images or summary.skipped:  # rank 0 (the only one that counts the merged manifest)
        rate = summary.processed / summary.seconds if summary.seconds > 0 else 0.0  # files: skipped ones count
        skipped = f", {summary.skipped} skipped (reasons in featx-manifest.jsonl)" if summary.skipped else ""
        work = (
            f"this run processed {summary.processed} file{'' if summary.processed == 1 else 's'} at {rate:.1f} files/s"
            if summary.processed
            else "nothing left to do (every file was done already)"
        )
        images = f"{summary.images} image{'' if summary.images == 1 else 's'}"
        with reader_may_stop(APP):
            print(f"{APP}: {options.output} holds features of {images}{skipped}; {work}")


def main() -> None:
    """Console-script entry point."""
    run_app(APP, run, ExtractAppConfig)


if __name__ == "__main__":
    main()
