"""The ``featx-export`` app: build the configured backbone and export it as ONNX, a ``torch.export`` program or
TorchScript; the export is reloaded and compared with eager.

Examples::

    featx-export backbone=resnet50_fpn export.format=onnx export.path=resnet50_fpn.onnx
    featx-export backbone=swin_t export.format=exported export.path=swin_t.pt2 export.dynamic=false
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

import featx
from featx.export import export_backbone
from featx.resources import config_dir


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="export")
def run(cfg: DictConfig) -> None:
    """Build ``cfg.backbone`` and write ``cfg.export``."""
    options = cfg.export
    if OmegaConf.is_missing(options, "path"):
        raise SystemExit("featx-export: error: export.path: missing; give it on the command line (export.path=...)")
    size = (options.height, options.width)
    try:
        backbone = featx.build(cfg.backbone)
    except featx.FeatxError as error:
        raise SystemExit(f"featx-export: error: {error}") from None
    if backbone.spec.input_size is not None:
        size = tuple(backbone.spec.input_size)
    try:
        result = export_backbone(backbone, options.path, options.format, size, options.batch_size,
                                 options.dynamic, options.overwrite)
    except featx.FeatxError as error:
        raise SystemExit(f"featx-export: error: {error}") from None
    except Exception as error:  # noqa: BLE001 - an exporter failure: say which and how to retry, no traceback
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        hint = " (try export.dynamic=false)" if options.dynamic else ""
        raise SystemExit(
            f"featx-export: error: exporting {backbone.spec.model} as {options.format} failed{hint}: "
            f"{type(error).__name__}: {first_line}"
        ) from None
    size_mb = result.path.stat().st_size / 2**20
    check = ("not checked (install onnxruntime to check it)" if result.max_abs_diff is None
             else f"max |export - eager| = {result.max_abs_diff:.2e}")
    print(f"featx-export: wrote {result.path} ({result.format}, {size_mb:.1f} MiB); {check}")


def main() -> None:
    """Console-script entry point."""
    run()


if __name__ == "__main__":
    main()
