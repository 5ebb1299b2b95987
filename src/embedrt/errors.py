"""One exception tree for everything embedrt raises on purpose.

Every message says what went wrong and what to do about it; the CLI prints it as one line.
"""

from __future__ import annotations


class EmbedrtError(Exception):
    """Base of every error embedrt raises deliberately."""


class BundleError(EmbedrtError):
    """The bundle directory is missing, corrupt, or does not fit this runtime."""


class InputError(EmbedrtError, ValueError):
    """The caller passed something that cannot be embedded or evaluated."""


class BackendError(EmbedrtError):
    """The inference engine could not be created or failed while running."""


class MissingExtraError(EmbedrtError, ImportError):
    """An optional dependency is not installed; the message names the pip extra."""


class ExportError(EmbedrtError):
    """The export stage could not produce a bundle that meets its checks."""


class ParityError(ExportError):
    """A variant's embeddings drifted from the PyTorch reference beyond the threshold."""


class EmbedrtWarning(UserWarning):
    """Something runs, but not the way the caller probably wants; the message says what to do instead."""


class InputTypeError(InputError, TypeError):
    """An input item has the wrong type (e.g. ``None`` where a string was expected)."""
