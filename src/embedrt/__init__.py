"""embedrt: a production runtime for small BERT sentence-embedding models.

The runtime API only; the export stage lives in :mod:`embedrt.export` and needs the ``export`` extra.
``Encoder`` is imported on first use, so ``import embedrt`` (and the CLI's ``--version`` or ``--help``)
does not load NumPy, tokenizers or an inference engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from embedrt._version import __version__
from embedrt.errors import (
    BackendError,
    BundleError,
    EmbedrtError,
    ExportError,
    InputError,
    InputTypeError,
    MissingExtraError,
    ParityError,
)

if TYPE_CHECKING:
    from embedrt.runtime.encoder import Encoder

__all__ = [
    "BackendError",
    "BundleError",
    "EmbedrtError",
    "Encoder",
    "ExportError",
    "InputError",
    "InputTypeError",
    "MissingExtraError",
    "ParityError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name == "Encoder":
        from embedrt.runtime.encoder import Encoder

        return Encoder
    raise AttributeError(f"module 'embedrt' has no attribute {name!r}")
