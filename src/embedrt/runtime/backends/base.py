"""The contract every inference engine implements: run one padded batch, nothing more."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np


class Backend(Protocol):
    """Runs the transformer on one padded batch and returns its token embeddings.

    Backends know nothing of tokenization, batching or pooling; the encoder does those.
    """

    #: Short engine name for logs and ``/info`` (``"onnxruntime-cpu"``, ``"tensorrt"``, ...).
    name: str
    #: The graph inputs this engine declares; the encoder feeds only these.
    input_names: tuple[str, ...]

    def run(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """Token embeddings ``(batch, seq, dim)`` as float32 for int64 ``(batch, seq)`` inputs."""
        ...


class DevicePoolingBackend(Backend, Protocol):
    """A backend whose graph also pools on the device (mean pooling as graph nodes, for GPUs)."""

    #: True when :meth:`run_pooled` gives the sentence embeddings for this bundle's pooling.
    pools_on_device: bool

    def run_pooled(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """Mean-pooled sentence embeddings ``(batch, dim)`` as float32."""
        ...
