"""embedrt: a production runtime for small BERT sentence-embedding models.

The runtime API only; the export stage lives in :mod:`embedrt.export` and needs the ``export`` extra.
"""

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
from embedrt.runtime.encoder import Encoder

__version__ = "0.1.0"

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
