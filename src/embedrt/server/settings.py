"""Settings of ``embedrt serve``: one frozen value, read from flags, then ``EMBEDRT_*`` variables, then defaults.

This module is the single list of serve options: the CLI builds its flags from :data:`OPTIONS`, so a
flag, its environment variable, its default and its check cannot drift apart. The options serve shares
with other commands (precision, device, threads) are the rows of :mod:`embedrt.options`. Standard
library only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from embedrt.errors import InputError
from embedrt.options import (
    DEVICE,
    ENGINE,
    ENV_PREFIX,
    PRECISION,
    THREADS,
    Option,
    OptionValueError,
    nonempty,
    whole_number,
)


def boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise OptionValueError(f"expected true or false, got {text!r}")


def boolean_or_auto(text: str) -> bool | None:
    """``auto`` (``None``: the library decides), else :func:`boolean`."""
    if text.strip().lower() == "auto":
        return None
    try:
        return boolean(text)
    except OptionValueError:
        raise OptionValueError(f"expected true, false or auto, got {text!r}") from None


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise OptionValueError(f"expected a number of seconds, got {text!r}") from None
    if not 0.1 <= value <= 3600:
        raise OptionValueError(f"expected between 0.1 and 3600 seconds, got {value:g}")
    return value


@dataclass(frozen=True)
class ServerSettings:
    """Everything the server needs; limits are per request unless said otherwise."""

    #: The bundle directory, or ``NAME=DIRECTORY`` to serve it under NAME; the first is the default model.
    bundle: str
    #: More bundles served by the same server (same forms as ``bundle``).
    more_bundles: tuple[str, ...] = ()
    #: Processes sharing the port, each with its own engines and cache, the cores split between them.
    workers: int = 1
    precision: str = "auto"
    engine: str = "auto"
    device: str = "cpu"
    host: str = "127.0.0.1"
    port: int = 8080
    api_key: str | None = None
    #: Padded tokens (rows x longest row) per engine run; a single text always fits.
    max_batch_tokens: int = 2048
    #: Longest the oldest queued request waits for batch-mates before a cycle starts. 0 (the default):
    #: none; a request runs as soon as the engine is free, and what arrives while it is busy shares the next run.
    max_wait_ms: int = 0
    #: Embedding requests in flight at once; one more gets 429 with Retry-After.
    max_concurrent_requests: int = 512
    #: Texts per request on TEI's routes (/embed, /similarity, /tokenize), as TEI's --max-client-batch-size.
    max_client_batch_size: int = 256
    #: Texts per request on the OpenAI routes (OpenAI takes 2,048), embedded in pieces of max_client_batch_size.
    max_openai_batch_size: int = 2048
    #: Characters per text (None: 250 x the model's max_seq_length, TEI's rule). Without truncation a longer
    #: text is refused; with it, the text is cut to this many characters before tokenizing.
    max_input_chars: int | None = None
    #: Truncate over-long inputs of requests that leave ``truncate`` out, on every route (TEI's --auto-truncate).
    auto_truncate: bool = True
    #: The model id clients see in ``model`` and ``/info`` (None: the hub id the bundle came from, else its folder).
    served_model_name: str | None = None
    #: The prompt put before every text when a request names none (TEI's --default-prompt-name); None: the
    #: bundle's own default prompt (``default_prompt_name`` in its manifest), as offline ``encode`` applies it.
    default_prompt_name: str | None = None
    #: Log one line a request (uvicorn's access log).
    access_log: bool = False
    threads: int | None = None
    #: Requests merged into one engine cycle (None: no limit). 1 with max_wait_ms 0 turns batching off.
    max_batch_requests: int | None = None
    #: Split a request with more than max_client_batch_size texts into batches instead of refusing it.
    split_client_batches: bool = False
    #: A text's vector does not depend on its batch-mates: no batch-dependent variant, OpenVINO int8's attention
    #: in length buckets (or unfused).
    batch_invariant: bool = True
    #: Pad each text to a width set by its own length and run texts of one width together
    #: (:class:`~embedrt.runtime.batching.LengthBuckets`): OpenVINO int8 then keeps its fused attention, still
    #: batch-invariant. ``None`` (auto, the default): on for OpenVINO int8, off elsewhere (``Encoder.load``'s rule).
    length_buckets: bool | None = None
    #: ``device=cuda``: one text at each padded width replays a captured CUDA graph (docs/gpu.md; off until measured).
    cuda_graphs: bool = False
    #: A lone small request that finds the engine idle runs on the event loop thread, without the two hand-offs
    #: to the engine thread and back (CPU, one model; :mod:`embedrt.server.batcher`).
    inline_lone_requests: bool = True
    #: Embeddings of texts already seen kept in memory and answered without the engine (0: off).
    #: 10,000 vectors of 768 floats are about 31 MB plus keys, a fraction of the model; FAQ traffic's
    #: hot set of distinct questions is usually a few thousand.
    cache_size: int = 10_000
    #: A request still queued this long after it arrived gets 504 and never reaches the engine (0: no limit).
    #: Clients may ask for less (or more) with the X-Request-Timeout-Ms header.
    request_timeout_ms: int = 0
    #: Bytes a request body may have, however it is sent (Content-Length or chunked): beyond it, 413 at once.
    payload_limit: int = 2_000_000
    #: Seconds a client may take to send a request's head, and again its body; then 408 and the socket closes.
    read_timeout_s: float = 5.0
    #: Open connections at once; one more is answered 503 and closed (None: as many as file descriptors allow).
    max_connections: int | None = None
    #: Seconds SIGTERM waits for in-flight requests before cancelling them.
    graceful_timeout_s: float = 30.0

    @property
    def bundles(self) -> tuple[str, ...]:
        return (self.bundle, *self.more_bundles)

    @property
    def max_wait_s(self) -> float:
        return self.max_wait_ms / 1000.0

    def public(self) -> dict[str, Any]:
        """The limits a client may see (``/info``): never the API key."""
        return {
            "max_batch_tokens": self.max_batch_tokens,
            "max_wait_ms": self.max_wait_ms,
            "max_concurrent_requests": self.max_concurrent_requests,
            "max_client_batch_size": self.max_client_batch_size,
            "max_openai_batch_size": self.max_openai_batch_size,
            "max_input_chars": self.max_input_chars,
            "auto_truncate": self.auto_truncate,
            "max_batch_requests": self.max_batch_requests,
            "split_client_batches": self.split_client_batches,
            "batch_invariant": self.batch_invariant,
            "length_buckets": "auto" if self.length_buckets is None else self.length_buckets,
            "inline_lone_requests": self.inline_lone_requests,
            "request_timeout_ms": self.request_timeout_ms,
            "payload_limit": self.payload_limit,
            "read_timeout_s": self.read_timeout_s,
            "max_connections": self.max_connections,
            "auth": self.api_key is not None,
        }


#: Every flag of ``embedrt serve`` except the bundle positional (``EMBEDRT_BUNDLE``).
OPTIONS: tuple[Option, ...] = (
    PRECISION,
    ENGINE,
    DEVICE,
    Option("host", nonempty, "address to bind; 0.0.0.0 exposes the server beyond this machine", "HOST"),
    Option("port", whole_number(0, 65535), "TCP port"),
    Option("api_key", nonempty, "require 'Authorization: Bearer KEY'; prefer the variable, flags show in ps", "KEY"),
    Option("max_batch_tokens", whole_number(1), "padded tokens per engine run"),
    Option(
        "max_wait_ms",
        whole_number(0, 60_000),
        "fixed wait for batch-mates before each engine cycle (0: none, a request runs as soon as the engine is "
        "free; what arrives while it is busy is batched anyway)",
    ),
    Option("max_concurrent_requests", whole_number(1), "embedding requests in flight; beyond it: 429"),
    Option(
        "served_model_name", nonempty, "the model id clients see in 'model' and /info (default: the bundle's)", "NAME"
    ),  # fmt: skip
    Option(
        "default_prompt_name",
        nonempty,
        "prompt (one of the bundle's, see `embedrt info`) put before texts when a request names none "
        "(default: the bundle's default prompt)",
        "NAME",
    ),
    Option("max_client_batch_size", whole_number(1), "texts per request on TEI's routes; beyond it: 422"),
    Option(
        "max_openai_batch_size", whole_number(1), "texts per request on the OpenAI routes (as OpenAI); beyond it: 422"
    ),
    Option(
        "auto_truncate",
        boolean,
        "cut over-long inputs of requests that leave 'truncate' out, on every route (false: refuse them, 422)",
        "BOOL",
    ),
    Option(
        "max_input_chars",
        whole_number(1),
        "characters per text (default: 250 x the model's max tokens): cut before tokenizing when truncating, else 422",
    ),
    THREADS,
    Option("workers", whole_number(1, 256), "processes sharing the port, --threads split between them (Linux)"),
    Option(
        "max_batch_requests", whole_number(1), "requests merged per engine cycle (default: no limit; 1 = no batching)"
    ),
    Option(
        "split_client_batches",
        boolean,
        "split a request over --max-client-batch-size into batches instead of refusing it (413)",
        "BOOL",
    ),
    Option(
        "batch_invariant",
        boolean,
        "a text's vector independent of its batch-mates (false: OpenVINO's fused attention, faster for one "
        "text, and an old bundle's dynamic int8; vectors then move with the traffic)",
        "BOOL",
    ),
    Option(
        "length_buckets",
        boolean_or_auto,
        "pad each text to a width set by its own length, runs of one width: OpenVINO int8 keeps its fused attention "
        "and stays batch-invariant (auto: on for OpenVINO int8; false there: attention unfused, invariant too)",
        "BOOL|auto",
    ),
    Option(
        "cuda_graphs",
        boolean,
        "with --device cuda: one text at each padded width replays a captured CUDA graph (less launch overhead; "
        "off by default until measured on a GPU, see docs/gpu.md)",
        "BOOL",
    ),
    Option(
        "inline_lone_requests",
        boolean,
        "run a lone small request on the event loop thread when the engine is idle, without hand-offs between "
        "threads (CPU, one model; false: always on the engine thread)",
        "BOOL",
    ),
    Option("cache_size", whole_number(0), "embeddings of texts already seen kept in memory (0: no cache)"),
    Option(
        "request_timeout_ms",
        whole_number(0),
        "a request queued longer gets 504 and never reaches the engine (0: no limit; header X-Request-Timeout-Ms)",
    ),
    Option("payload_limit", whole_number(1), "bytes per request body, however sent; beyond it: 413", "BYTES"),
    Option("read_timeout_s", seconds, "seconds to send a request head, and again its body; then 408", "S"),
    Option("max_connections", whole_number(1), "open connections; beyond it: 503 and closed"),
    Option("access_log", boolean, "log one line a request (method, path, status)", "BOOL"),
)


def _default(field: str) -> Any:
    return ServerSettings.__dataclass_fields__[field].default


def resolve_settings(flags: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> ServerSettings:
    """Settings from parsed flags (``None`` = not given), then ``EMBEDRT_*`` variables, then defaults.

    Raises :class:`InputError` naming the flag and the variable when a value is invalid.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    given_bundles = flags.get("bundle")
    if isinstance(given_bundles, str):
        given_bundles = [given_bundles]
    bundles = [str(one) for one in given_bundles or []] or [environ.get(ENV_PREFIX + "BUNDLE", "")]
    if not all(bundles):
        raise InputError(
            f"no bundle given: pass BUNDLE or set {ENV_PREFIX}BUNDLE to a directory made by `embedrt export`"
        )
    values["bundle"], values["more_bundles"] = bundles[0], tuple(bundles[1:])
    for option in OPTIONS:
        given = flags.get(option.field)
        source = option.flag
        if given is None and environ.get(option.env, "") != "":
            given, source = environ[option.env], option.env
        if given is None:
            values[option.field] = _default(option.field)
            continue
        try:
            values[option.field] = option.parse(str(given))
        except ValueError as err:
            raise InputError(f"{source}: {err}") from err
    return ServerSettings(**values)
