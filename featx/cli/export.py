"""The ``featx-export`` app: build the configured backbone and export it as ONNX, a ``torch.export`` program or
TorchScript; the export is reloaded and compared with eager.

Examples::

    featx-export backbone=resnet50_fpn export.format=onnx export.path=resnet50_fpn.onnx
    featx-export backbone=swin_t export.format=exported export.path=swin_t.pt2 export.dynamic=false
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import featx
from featx.cli.app import app_task, example_size, input_size, run_app
from featx.cli.errors import fail, reported_errors
from featx.cli.output import reader_may_stop
from featx.errors import first_line
from featx.files import file_path_argument, printable_path
from featx.spec.apps import ExportAppConfig
from featx.spec.config_files import config_dir
from featx.spec.limits import check_batch_shape

APP = "featx-export"


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="export")
@app_task(APP, ExportAppConfig)
def run(cfg: DictConfig) -> None:
    """Build ``cfg.backbone`` and write ``cfg.export``."""
    # torch: by a job only (not --help, -sc)
    from featx.tasks.export import APP_KEYS, FORMATS, export_backbone, export_path, static_may_help

    options = cfg.export  # every key set and of its type (app_task checked)
    if options.format not in FORMATS:
        fail(APP, f"export.format: {options.format!r} is unknown (valid: {', '.join(FORMATS)})")
    if options.path == "-":  # the usual "standard output" of a command line; a model file is written to a path
        fail(
            APP,
            "export.path: '-' would mean standard output, which featx-export does not write to; give a file "
            "path (./- for a file named '-')",
        )
    with reported_errors(APP):
        export_path(file_path_argument(options.path, "export.path"), options.format, "export.path")
        # the given values' bounds before the build; the pixel limit is checked again at the size it traces
        check_batch_shape("export", options.batch_size, *input_size(options.height, options.width, (1, 1)))
        backbone = featx.build(cfg.backbone)
    fixed = backbone.spec.input_size
    with reported_errors(APP):  # the pixel limit at the size it traces, named with the settings it comes from
        height, width = example_size("export", options.batch_size, options.height, options.width, fixed)
    if fixed is not None and (height, width) != (fixed[0], fixed[1]):  # a model that takes one size exports at it
        fail(
            APP,
            f"export.height, export.width: {height}x{width}, but the backbone takes {fixed[0]}x{fixed[1]} only "
            "(backbone.input_size); leave them out or set them to that size",
        )
    try:
        with reported_errors(APP):
            result = export_backbone(
                backbone,
                options.path,
                options.format,
                (height, width),
                options.batch_size,
                options.dynamic,
                options.overwrite,
                keys=APP_KEYS,
            )
    except Exception as error:  # noqa: BLE001 - an exporter failure: say which and how to retry, no traceback
        hint = " (try export.dynamic=false)" if static_may_help(options.format, options.dynamic) else ""
        reason = f"{type(error).__name__}: {first_line(error)}"
        fail(APP, f"exporting {backbone.spec.model} as {options.format} failed{hint}: {reason}")
    size_mb = result.path.stat().st_size / 2**20
    check = (
        "not checked (install onnxruntime to check it)"
        if result.max_abs_diff is None
        else f"max |export - eager| = {result.max_abs_diff:.2e}"
    )
    with reader_may_stop(APP):
        print(f"{APP}: wrote {printable_path(result.path)} ({result.format}, {size_mb:.1f} MiB); {check}")


def main() -> None:
    """Console-script entry point."""
    run_app(APP, run, ExportAppConfig)


if __name__ == "__main__":
    main()
