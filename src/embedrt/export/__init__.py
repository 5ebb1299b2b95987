"""The export stage (needs the ``export`` extra): a sentence-transformers model becomes a bundle."""

from embedrt.export.pipeline import ExportSettings, export_bundle

__all__ = ["ExportSettings", "export_bundle"]
