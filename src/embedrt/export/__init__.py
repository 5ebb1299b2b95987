"""The export stage (needs the ``export`` extra): a sentence-transformers model becomes a bundle.

``export_bundle`` and ``ExportSettings`` are imported on first use, so reading a constant of a
submodule (the CLI's help does) loads none of the export stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from embedrt.export.pipeline import ExportSettings, export_bundle

__all__ = ["ExportSettings", "export_bundle"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from embedrt.export import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'embedrt.export' has no attribute {name!r}")
