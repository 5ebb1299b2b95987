"""Prometheus metrics of one server, in their own registry (so two apps in one process never collide).

Under ``--workers N`` (``PROMETHEUS_MULTIPROC_DIR`` set) every worker writes its values to files there
and :meth:`Metrics.render` reads all of them: one view of the whole server from any worker.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

# Latency buckets from 1 ms to 30 s: CPU batches of short queries take milliseconds, long paragraphs seconds.
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_TOKENS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)


class Metrics:
    """What an operator needs to tell a slow engine from a long queue from bad clients."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._add_request_metrics(r)
        self._add_connection_metrics(r)
        self._add_engine_metrics(r)
        self._add_model_metrics(r)

    def _add_request_metrics(self, r: CollectorRegistry) -> None:
        """Requests: latency, status, queueing, tokenizing, deadlines, the result cache."""
        self.request_duration = Histogram(
            "embedrt_request_duration_seconds",
            "Time from request received to response ready, by endpoint",
            ["endpoint"],
            buckets=_SECONDS,
            registry=r,
        )
        self.requests = Counter(
            "embedrt_requests_total",
            "Embedding requests answered, by endpoint and status",
            ["endpoint", "status"],
            registry=r,
        )
        self.queue_duration = Histogram(
            "embedrt_queue_duration_seconds",
            "Time a request waited from entering the batcher to its first engine run",
            buckets=_SECONDS,
            registry=r,
        )
        self.tokenize_duration = Histogram(
            "embedrt_tokenize_duration_seconds", "Time to tokenize one request's texts", buckets=_SECONDS, registry=r
        )
        self.expired = Counter(
            "embedrt_deadline_expired_total",
            "Requests whose deadline passed before any of their texts ran (answered 504)",
            registry=r,
        )
        self.cache_hits = Counter("embedrt_cache_hits_total", "Texts answered from the result cache", registry=r)
        self.cache_misses = Counter(
            "embedrt_cache_misses_total", "Texts looked up in the result cache and not found", registry=r
        )

    def _add_connection_metrics(self, r: CollectorRegistry) -> None:
        """HTTP connections: open, refused, stalled."""
        self.connections = Gauge(
            "embedrt_connections", "Open HTTP connections", registry=r, multiprocess_mode="livesum"
        )
        self.connections_refused = Counter(
            "embedrt_connections_refused_total", "Connections answered 503 and closed (--max-connections)", registry=r
        )
        self.read_timeouts = Counter(
            "embedrt_read_timeouts_total",
            "Connections closed because a request head or body stalled (--read-timeout-s)",
            registry=r,
        )

    def _add_engine_metrics(self, r: CollectorRegistry) -> None:
        """The engine and its batches, and what is in flight or queued."""
        self.inference_duration = Histogram(
            "embedrt_inference_duration_seconds",
            "Engine time per batch (model run and pooling)",
            buckets=_SECONDS,
            registry=r,
        )
        self.batch_size = Histogram("embedrt_batch_size", "Texts per engine batch", buckets=_ROWS, registry=r)
        self.batch_tokens = Histogram(
            "embedrt_batch_tokens", "Padded tokens (rows x width) per engine batch", buckets=_TOKENS, registry=r
        )
        self.batch_requests = Histogram(
            "embedrt_batch_requests", "Requests merged into one batching cycle", buckets=_ROWS, registry=r
        )
        self.in_flight = Gauge(
            "embedrt_requests_in_flight",
            "Embedding requests being served now",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.queue_size = Gauge(
            "embedrt_queue_texts", "Texts waiting for the engine", registry=r, multiprocess_mode="livesum"
        )
        self.failures = Counter("embedrt_request_failures_total", "Failed requests, by reason", ["reason"], registry=r)
        self.texts = Counter("embedrt_texts_total", "Texts embedded", registry=r)
        self.tokens = Counter(
            "embedrt_tokens_total", "Tokens embedded (after truncation, with special tokens)", registry=r
        )

    def _add_model_metrics(self, r: CollectorRegistry) -> None:
        """Per served model (a server may serve several): which model did what."""
        self.model_requests = Counter(
            "embedrt_model_requests_total",
            "Embedding requests answered, by model, endpoint and status",
            ["model", "endpoint", "status"],
            registry=r,
        )
        self.model_request_duration = Histogram(
            "embedrt_model_request_duration_seconds",
            "Time from request received to response ready, by model and endpoint",
            ["model", "endpoint"],
            buckets=_SECONDS,
            registry=r,
        )
        self.model_texts = Counter("embedrt_model_texts_total", "Texts embedded, by model", ["model"], registry=r)
        self.model_tokens = Counter("embedrt_model_tokens_total", "Tokens embedded, by model", ["model"], registry=r)

    def render(self) -> bytes:
        """Prometheus text: this process's metrics, or every worker's summed under ``--workers``."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
