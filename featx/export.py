"""The documented path of :mod:`featx.tasks.export` (TorchScript, ``torch.export`` and ONNX exports, checked).

Example: ``from featx.export import export_backbone``.
"""

from featx.tasks.export import FORMATS, ExportKeys, ExportResult, export_backbone

__all__ = ["FORMATS", "ExportKeys", "ExportResult", "export_backbone"]
