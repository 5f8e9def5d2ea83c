"""The ``featx`` app (also ``python -m featx``): build the configured backbone, run one random batch, print its table.

Examples::

    featx backbone=resnet50_fpn backbone.fpn.out_channels=128
    featx backbone=vgg16 --cfg job --resolve
    featx -m backbone=vgg16,resnet34,resnet50_fpn
    featx backbone=vgg16 run=false          # the table without allocating weights
"""

from __future__ import annotations

import dataclasses
import time

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import featx
from featx.cli.app import app_task, example_size, input_size, run_app
from featx.cli.errors import fail, reported_errors
from featx.cli.output import reader_may_stop
from featx.errors import InputShapeError, first_line
from featx.spec.apps import AppConfig
from featx.spec.config_files import config_dir
from featx.spec.limits import check_batch_shape

APP = "featx"


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
@app_task(APP, AppConfig)
def run(cfg: DictConfig) -> None:
    """Build ``cfg.backbone`` and print the table for a batch of ``cfg.input``."""
    from featx.cli.report import format_report, measure  # torch: imported by a job only (not --help, -sc, ...)

    # the given values' bounds before the build; the pixel limit at the size the run takes, once it is known
    check_batch_shape("input", cfg.input.batch_size, *input_size(cfg.input.height, cfg.input.width, (1, 1)))
    choice = HydraConfig.get().runtime.choices.get("backbone")
    with reported_errors(APP):
        start = time.perf_counter()
        if cfg.run:
            backbone = featx.build(cfg.backbone)
        else:  # the spec as written is checked (its device too), then built on meta
            backbone = featx.build(dataclasses.replace(featx.load_spec(cfg.backbone), device="meta"))
        build_seconds = time.perf_counter() - start
    spec = backbone.spec
    unread = "run=false" if not cfg.run else "meta device" if spec.device == "meta" else None
    weights = (spec.weights or "random init") + (f" (not loaded: {unread})" if unread else "")
    title = (
        f"featx backbone={choice or spec.model} ({spec.model}) | weights: {weights} | norm: {spec.norm} | "
        f"frozen stages: {spec.frozen_stages}" + (f" | reinit: {', '.join(spec.reinit)}" if spec.reinit else "")
    )
    height, width = example_size("input", cfg.input.batch_size, cfg.input.height, cfg.input.width, spec.input_size)
    try:
        report = measure(backbone, cfg.input.batch_size, height, width, build_seconds, title)
    except (RuntimeError, InputShapeError) as error:  # e.g. an input smaller than the stages can take
        fail(APP, f"input {height}x{width}: the forward pass failed ({first_line(error)})")
    with reader_may_stop(APP):
        print(format_report(report))


def main() -> None:
    """Console-script entry point."""
    run_app(APP, run, AppConfig)


if __name__ == "__main__":
    main()
