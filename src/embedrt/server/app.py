"""The ASGI application: routes for OpenAI and TEI clients, health, info and metrics.

It serves one bundle or several (a :class:`Model` each, with its own batcher). The OpenAI routes pick
the model by the body's ``model`` (its name or alias); TEI's routes serve the first model unless the
``X-Model`` header names another. Several models share one pool of engine threads, so their batches
never run on more threads than the server was given.

A plain ASGI callable, no web framework: each request costs a dictionary lookup (the table in
:mod:`embedrt.server.routes`) and the work it asks for. Routes stay thin: authorize, admit (or 429),
read the body within ``--payload-limit`` however it is sent, parse it with its field table (which also
writes ``/openapi.json``), fit over-long texts (cut or refuse, as TEI), tokenize, look in the result
cache, hand the rest to the :class:`~embedrt.server.batcher.DynamicBatcher`, render with orjson and
TEI's timing headers. Errors go through the one table in :mod:`embedrt.server.errors`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import orjson
from prometheus_client import Counter
from tokenizers import Encoding

from embedrt.errors import InputError
from embedrt.runtime.encoder import Encoder
from embedrt.server.batcher import DynamicBatcher, Timing
from embedrt.server.errors import ErrorKind, ServerError, classify, render_error
from embedrt.server.metrics import Metrics
from embedrt.server.openapi import document
from embedrt.server.routes import ROUTES, Dialect, Route
from embedrt.server.schemas import (
    CHARS_PER_TOKEN,
    EMBED,
    OPENAI,
    SIMILARITY,
    TOKENIZE,
    Limits,
    fit,
    openai_body,
    parse_json_object,
    tei_body,
    top_field,
)
from embedrt.server.settings import ServerSettings

log = logging.getLogger("embedrt.server")

JSON = b"application/json"
#: A client's own deadline for one request, in milliseconds (at most the server's --request-timeout-ms).
TIMEOUT_HEADER = "x-request-timeout-ms"
#: The model a TEI route serves when the server has several (default: the first bundle given).
MODEL_HEADER = "x-model"
WARM_UP_TEXTS = ("warm up", "预热" * 40, "a b c d e f g h i j k l m n o p q r s t u v w x y z")

Response = tuple[int, list[tuple[bytes, bytes]], bytes]


class ClientGone(Exception):
    """The client closed the connection before its request body arrived: nobody to answer."""


class Request:
    """What a route needs of one HTTP request."""

    __slots__ = ("headers", "method", "model", "path", "receive", "started", "work")

    def __init__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        self.path: str = scope["path"]
        self.method: str = scope["method"]
        self.headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        self.receive = receive
        self.started = time.monotonic()
        self.model: str | None = None  # the served model that answered, once a route has chosen it
        self.work: Work | None = None  # what an embedding route computed, counted once the response has left

    async def body(self, limit: int) -> bytes:
        """The whole body, refused with 413 as soon as it passes ``limit`` bytes, however it is sent."""
        declared = self.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _too_large(f"the request body has {declared} bytes", limit)
        chunks, size = [], 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:  # chunked, or longer than it said: stop reading now, memory stays flat
                raise _too_large(f"the request body passed {limit} bytes", limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _too_large(what: str, limit: int) -> ServerError:
    return ServerError(
        ErrorKind.TOO_LARGE, f"{what}; this server takes at most {limit} (--payload-limit)", "body", close=True
    )


def model_name(encoder: Encoder) -> str:
    """The id clients see: the hub id the bundle was exported from, else the bundle directory's name."""
    source = encoder.manifest.source
    return encoder.bundle.root.resolve().name if not source or Path(source).is_absolute() else source


@dataclass(frozen=True)
class Served:
    """A bundle to serve: its loaded encoder and the name clients call it by (None: :func:`model_name`)."""

    encoder: Encoder
    name: str | None = None


@dataclass
class Model:
    """One served bundle: its encoder, its batcher and how clients name it."""

    name: str
    encoder: Encoder
    batcher: DynamicBatcher
    #: Characters per text: beyond it refused without truncation, cut before tokenizing with it (TEI's rule).
    char_limit: int
    compute_type: bytes
    #: This model's texts and tokens counters (``embedrt_model_*_total``), looked up once rather than per request.
    texts_total: Counter
    tokens_total: Counter
    #: What goes before a text whose request names no prompt (--default-prompt-name, else the bundle's default).
    default_prompt: str = ""

    def prompt(self, name: str | None) -> str:
        """The prefix for ``prompt_name`` (None: the default); the request schema already checked the name."""
        return self.default_prompt if name is None else self.encoder.prompt_text(name)


class EmbeddingServer:
    """The ASGI application serving one encoder, or several :class:`Served` bundles, within ``settings``' limits.

    With several, their batchers share one pool of ``engine_threads`` engine threads (each runs one
    batch at a time): batches of different models run side by side on at most that many threads, each
    model's turn comes in arrival order, and the engine threads of the models should add up to the cores.
    """

    def __init__(
        self,
        encoder: Encoder | Sequence[Served],
        settings: ServerSettings,
        metrics: Metrics | None = None,
        engine_threads: int = 1,
    ) -> None:
        if isinstance(encoder, (list, tuple)):
            served: list[Served] = list(encoder)
        else:  # one encoder (or a stand-in for one, in tests)
            served = [Served(cast(Encoder, encoder), settings.served_model_name)]
        if not served:
            raise InputError("no bundle to serve: give at least one")
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.engine: ThreadPoolExecutor | None = None
        if len(served) > 1:
            self.engine = ThreadPoolExecutor(max_workers=max(1, engine_threads), thread_name_prefix="embedrt-engine")
        self.models = [self._model(one) for one in served]
        self.lookup = _names(self.models)
        default = self.models[0]
        self.encoder, self.batcher, self.name = default.encoder, default.batcher, default.name
        self.char_limit, self.compute_type = default.char_limit, default.compute_type
        self.ready = False
        self.in_flight = 0
        self.routes: dict[str, dict[str, Route]] = {}
        self._limits: dict[tuple[Dialect, str], Limits] = {}  # by dialect and model: built once, read per request
        for route in ROUTES:
            self.routes.setdefault(route.path, {})[route.method] = route
        self.openapi_body = orjson.dumps(document(self.limits, self.name, self.settings.api_key is not None))

    def _model(self, served: Served) -> Model:
        encoder, settings = served.encoder, self.settings
        batcher = DynamicBatcher(
            encoder,
            max_batch_tokens=settings.max_batch_tokens,
            max_wait_s=settings.max_wait_s,
            max_batch_requests=settings.max_batch_requests,
            metrics=self.metrics,
            engine=self.engine,
            inline=settings.inline_lone_requests and settings.device == "cpu",
        )
        name = served.name or model_name(encoder)
        return Model(
            name=name,
            encoder=encoder,
            batcher=batcher,
            char_limit=settings.max_input_chars or CHARS_PER_TOKEN * encoder.max_seq_length,
            compute_type=f"{settings.device}+{encoder.engine}+{encoder.precision}".encode(),
            default_prompt=encoder.prompt_text(settings.default_prompt_name),
            texts_total=self.metrics.model_texts.labels(name),
            tokens_total=self.metrics.model_tokens.labels(name),
        )

    def limits(self, route: Route, model: Model | None = None) -> Limits:
        """What ``route`` takes: OpenAI's 2,048 texts on its routes, TEI's --max-client-batch-size on the others."""
        model = model or self.models[0]
        key = (route.dialect, model.name)
        known = self._limits.get(key)
        if known is None:
            known = self._limits[key] = self._new_limits(route.dialect, model)
        return known

    def _new_limits(self, dialect: Dialect, model: Model) -> Limits:
        encoder = model.encoder
        dim, prompts = encoder.dim, tuple(encoder.prompts)
        if dialect is Dialect.OPENAI:
            return Limits(dim, self.settings.max_openai_batch_size, "--max-openai-batch-size", prompts)
        split = self.settings.split_client_batches
        return Limits(dim, None if split else self.settings.max_client_batch_size, prompts=prompts)

    def model(self, request: Request, name: str | None, param: str) -> Model:
        """The model ``name`` calls for (None: the first); unknown is a 404 naming the served ones.

        With one model, the OpenAI routes take any name (as before: clients send their own model ids).
        """
        if name is None:
            chosen = self.models[0]
        elif name in self.lookup:
            chosen = self.lookup[name]
        elif len(self.models) == 1 and param == "model":
            chosen = self.models[0]
        else:
            served = ", ".join(repr(model.name) for model in self.models)
            raise ServerError(
                ErrorKind.NOT_FOUND, f"model {name[:100]!r} is not served here; this server has {served}", param
            )
        request.model = chosen.name
        return chosen

    def received_requests(self, count: Callable[[], int]) -> None:
        """Tell the batchers how many requests the HTTP server has received and not yet answered, so that a
        lone request can run at once on the event loop thread (:mod:`embedrt.server.batcher`)."""
        for model in self.models:
            model.batcher.alone = lambda: count() <= 1

    # ------------------------------------------------------------------------------------------ ASGI
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as err:  # reported to uvicorn, which exits; serve() says so
                    log.error("warm-up failed", exc_info=err)
                    await send({"type": "lifespan.startup.failed", "message": str(err)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def start(self) -> None:
        """Start the batchers and run each engine once per warm-up text, before the first client."""
        for model in self.models:
            batcher, encoder = model.batcher, model.encoder
            await batcher.start()
            for text in WARM_UP_TEXTS:  # first runs allocate engine buffers; pay for that now
                await batcher.embed(await batcher.tokenize([text] * 4), normalize=False)
                # and alone: a lone request may run on this thread, whose OpenVINO infer request is its own
                await batcher.embed(await batcher.tokenize([text]), normalize=False)
            log.info(
                "embedrt: serving %s (%s %s, %s), dim %d",
                model.name,
                encoder.engine,
                encoder.precision,
                encoder.backend.name,
                encoder.dim,
            )
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        await asyncio.gather(*(model.batcher.stop() for model in self.models))
        if self.engine is not None:
            self.engine.shutdown(wait=True)

    async def _http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        request = Request(scope, receive)
        close = False
        route = None
        try:
            route = self.route(request)
            if route.private:
                self.authorize(request)
            handler = getattr(self, route.handler)
            if route.embedding:
                self.admit()
                try:
                    status, headers, body = await handler(request, route)
                finally:
                    self.in_flight -= 1
                    self.metrics.in_flight.dec()
            else:
                status, headers, body = await handler(request)
        except ClientGone:
            return
        except Exception as err:
            kind, message, param = classify(err)
            if kind is ErrorKind.BACKEND:
                log.error("request %s %s failed", request.method, request.path, exc_info=err)
            self.metrics.failures.labels(kind.value).inc()
            status, headers, body = render_error(kind, message, request.path, param)
            if kind is ErrorKind.METHOD:
                headers.append((b"allow", ", ".join(self.routes[request.path]).encode()))
            close = isinstance(err, ServerError) and err.close
        head = [(b"content-length", str(len(body)).encode()), *headers]
        if not any(name == b"content-type" for name, _ in headers):
            head.append((b"content-type", JSON))
        if close:  # the body was not read to its end: the connection cannot carry another request
            head.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": head})
        await send({"type": "http.response.body", "body": body})
        if route is not None and route.embedding:
            if request.work is not None:
                self.count(request.work)
            elapsed = time.monotonic() - request.started
            self.metrics.request_duration.labels(request.path).observe(elapsed)
            self.metrics.requests.labels(request.path, str(status)).inc()
            if request.model is not None:
                self.metrics.model_request_duration.labels(request.model, request.path).observe(elapsed)
                self.metrics.model_requests.labels(request.model, request.path, str(status)).inc()

    def route(self, request: Request) -> Route:
        """The route for the request's path and method, or a 404 / 405 saying what there is."""
        methods = self.routes.get(request.path)
        if methods is None:
            raise ServerError(ErrorKind.NOT_FOUND, f"no route {request.path}; this server has {', '.join(self.routes)}")
        route = methods.get(request.method)
        if route is None:
            allowed = ", ".join(methods)
            raise ServerError(ErrorKind.METHOD, f"{request.method} is not allowed on {request.path}; use {allowed}")
        return route

    # ------------------------------------------------------------------------------------------ shared steps
    def authorize(self, request: Request) -> None:
        key = self.settings.api_key
        if key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
            what = "wrong API key" if header else "missing 'Authorization: Bearer KEY' header"
            raise ServerError(ErrorKind.UNAUTHORIZED, f"{what}: this server was started with --api-key")

    def admit(self) -> None:
        """Count one more embedding request in flight, or refuse it with 429 at the limit (the caller counts it out)."""
        if self.in_flight >= self.settings.max_concurrent_requests:
            raise ServerError(
                ErrorKind.OVERLOADED,
                f"the server is at its limit of {self.settings.max_concurrent_requests} concurrent requests "
                "(--max-concurrent-requests); retry after the Retry-After seconds",
            )
        self.in_flight += 1
        self.metrics.in_flight.inc()

    def deadline(self, request: Request) -> float | None:
        """When the request must have started (``time.monotonic()``), from the server's limit and the header."""
        limits = [self.settings.request_timeout_ms] if self.settings.request_timeout_ms else []
        asked = request.headers.get(TIMEOUT_HEADER)
        if asked is not None:
            if not asked.strip().isdigit() or not 1 <= int(asked) <= 86_400_000:
                raise ServerError(
                    ErrorKind.VALIDATION,
                    f"header X-Request-Timeout-Ms must be a whole number of milliseconds, got {asked[:40]!r}",
                    "X-Request-Timeout-Ms",
                )
            limits.append(int(asked))
        return request.started + min(limits) / 1000 if limits else None

    async def json(self, request: Request) -> dict[str, Any]:
        return parse_json_object(await request.body(self.settings.payload_limit))

    async def embed(
        self, model: Model, texts: list[str], how: Embedding, deadline: float | None, work: Work
    ) -> np.ndarray:
        """Vectors of ``texts``, in pieces of --max-client-batch-size; ``work`` gets their tokens and timings.

        The prompt goes before each text after it is fitted to the character limit, as offline ``encode``
        puts it before the text the caller gave.
        """
        texts = fit(texts, how.truncate, how.direction, model.char_limit, how.label, how.fix)
        if how.prompt:
            texts = [how.prompt + text for text in texts]
        size = self.settings.max_client_batch_size
        parts = []
        for start in range(0, len(texts), size):
            began = time.perf_counter()
            encodings = await model.batcher.tokenize(texts[start : start + size], how.direction)
            work.tokenization_s += time.perf_counter() - began
            if not how.truncate:
                for index, encoding in enumerate(encodings):
                    if encoding.overflowing:
                        label = how.label(start + index)
                        raise ServerError(
                            ErrorKind.VALIDATION,
                            f"'{label}' is longer than this model's {model.encoder.max_seq_length} tokens "
                            f"(max_input_length); {how.fix}",
                            top_field(label),
                        )
            work.tokens += sum(len(encoding.ids) for encoding in encodings)
            parts.append(await self.cached(model, encodings, how.normalize, deadline, work.timing))
        work.characters += sum(len(text) for text in texts)
        work.model, work.texts = model, len(texts)  # counted by _http once the response has left
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def count(self, work: Work) -> None:
        """The texts and tokens a request embedded, in the metrics: after its response, which right after an
        engine run (every step on the way to the response runs with cold caches) need not wait for them."""
        if work.model is not None:
            self.metrics.texts.inc(work.texts)
            self.metrics.tokens.inc(work.tokens)
            work.model.texts_total.inc(work.texts)
            work.model.tokens_total.inc(work.tokens)

    async def cached(
        self, model: Model, encodings: list[Encoding], normalize: bool, deadline: float | None, timing: Timing
    ) -> np.ndarray:
        """Vectors from the model's result cache where it has them, from its batcher for the rest."""
        cache, batcher = model.encoder.cache, model.batcher
        if cache is None:
            return await batcher.embed(encodings, normalize, deadline, timing)
        out = np.empty((len(encodings), model.encoder.dim), dtype=np.float32)
        keys, missing = cache.fill([encoding.ids for encoding in encodings], normalize, out)
        self.metrics.cache_hits.inc(len(keys) - len(missing))
        self.metrics.cache_misses.inc(len(missing))
        if len(missing) == len(encodings):  # nothing cached: the batcher's array is the answer
            computed = await batcher.embed(encodings, normalize, deadline, timing)
            cache.put_many(keys, computed)
            return computed
        if missing:
            computed = await batcher.embed([encodings[i] for i in missing], normalize, deadline, timing)
            out[missing] = computed
            cache.put_many([keys[i] for i in missing], computed)
        return out

    def timing_headers(self, request: Request, model: Model, work: Work) -> list[tuple[bytes, bytes]]:
        """TEI's per-request headers: where the time went (whole milliseconds) and how much was computed."""
        total = str(round((time.monotonic() - request.started) * 1000)).encode()
        return [
            (b"x-compute-type", model.compute_type),
            (b"x-compute-time", total),
            (b"x-compute-characters", str(work.characters).encode()),
            (b"x-compute-tokens", str(work.tokens).encode()),
            (b"x-total-time", total),
            (b"x-tokenization-time", str(round(work.tokenization_s * 1000)).encode()),
            (b"x-queue-time", str(round(work.timing.queue_s * 1000)).encode()),
            (b"x-inference-time", str(round(work.timing.inference_s * 1000)).encode()),
        ]

    # ------------------------------------------------------------------------------------------ routes
    async def openai_embeddings(self, request: Request, route: Route) -> Response:
        """OpenAI's embeddings: unit-length vectors whatever the model's modules, as OpenAI and TEI return."""
        deadline = self.deadline(request)
        body = await self.json(request)
        asked = body.get("model")
        model = self.model(request, asked if isinstance(asked, str) else None, "model")
        query = OPENAI.read(body, self.limits(route, model))
        truncate = self.settings.auto_truncate
        how = Embedding(True, truncate, "right", _labels("input"), OPENAI_TRUNCATE_FIX, model.prompt(None))
        work = request.work = Work()
        vectors = await self.embed(model, query["input"], how, deadline, work)
        answer = openai_body(vectors, query["encoding_format"], model.name, work.tokens)
        return 200, self.timing_headers(request, model, work), answer

    async def tei_embed(self, request: Request, route: Route) -> Response:
        deadline = self.deadline(request)
        model = self.model(request, request.headers.get(MODEL_HEADER), "X-Model")
        query = EMBED.read(await self.json(request), self.limits(route, model))
        truncate = _first(query["truncate"], self.settings.auto_truncate)
        direction = query["truncation_direction"]
        prompt = model.prompt(query["prompt_name"])
        how = Embedding(query["normalize"], truncate, direction, _labels("inputs"), TRUNCATE_FIX, prompt)
        work = request.work = Work()
        vectors = await self.embed(model, query["inputs"], how, deadline, work)
        return 200, self.timing_headers(request, model, work), tei_body(vectors)

    async def similarity(self, request: Request, route: Route) -> Response:
        """TEI's ``/similarity``: the cosine of ``source_sentence`` with each of ``sentences``, in order."""
        deadline = self.deadline(request)
        model = self.model(request, request.headers.get(MODEL_HEADER), "X-Model")
        query = SIMILARITY.read(await self.json(request), self.limits(route, model))
        inputs, parameters = query["inputs"], query["parameters"] or {}
        truncate = _first(parameters.get("truncate"), query["truncate"], self.settings.auto_truncate)
        direction = parameters.get("truncation_direction") or query["truncation_direction"] or "right"
        prompt = model.prompt(parameters.get("prompt_name"))
        how = Embedding(True, truncate, direction, _similarity_label, SIMILARITY_TRUNCATE_FIX, prompt)
        work = request.work = Work()
        vectors = await self.embed(model, [inputs["source_sentence"], *inputs["sentences"]], how, deadline, work)
        scores = np.clip(vectors[1:] @ vectors[0], -1.0, 1.0)
        return 200, self.timing_headers(request, model, work), orjson.dumps(scores, option=orjson.OPT_SERIALIZE_NUMPY)

    async def tokenize(self, request: Request) -> Response:
        """TEI's ``/tokenize``: for each input, its tokens as the model sees them (character offsets)."""
        model = self.model(request, request.headers.get(MODEL_HEADER), "X-Model")
        query = TOKENIZE.read(await self.json(request), self.limits(self.routes["/tokenize"]["POST"], model))
        prompt = model.prompt(query["prompt_name"])
        texts = [prompt + text for text in query["inputs"]] if prompt else query["inputs"]
        encodings = await model.batcher.tokenize(texts)
        body = [
            _tokens(text, encoding, query["add_special_tokens"])
            for text, encoding in zip(texts, encodings, strict=True)
        ]
        return 200, [], orjson.dumps(body)

    async def health(self, request: Request) -> Response:
        if not (self.ready and all(model.batcher.healthy for model in self.models)):
            raise ServerError(
                ErrorKind.UNAVAILABLE, "the model is not loaded and warmed yet, or the server is stopping"
            )
        return 200, [], b'{"status":"ok"}'

    async def info(self, request: Request) -> Response:
        """The first model's card at the top (TEI's shape), every served model's under ``models``."""
        cards = [self.card(model) for model in self.models]
        return 200, [], orjson.dumps({**cards[0], "models": cards})

    def card(self, model: Model) -> dict[str, Any]:
        encoder = model.encoder
        return {
            "model_id": model.name,
            "model_dtype": encoder.precision,
            "engine": encoder.engine,
            "backend": encoder.backend.name,
            "variant": encoder.variant,
            "threads": getattr(getattr(encoder.backend, "settings", None), "threads", None),
            "length_buckets": encoder.buckets is not None,  # padded to a width set by each text's own length
            "dim": encoder.dim,
            "max_input_length": encoder.max_seq_length,
            "max_client_batch_size": self.settings.max_client_batch_size,
            "max_input_chars": model.char_limit,
            "auto_truncate": self.settings.auto_truncate,
            "max_batch_tokens": self.settings.max_batch_tokens,
            "max_concurrent_requests": self.settings.max_concurrent_requests,
            "limits": self.settings.public(),
            "cache": encoder.cache.stats() if encoder.cache is not None else None,
            "manifest": orjson.loads(encoder.manifest.to_json()),
        }

    async def list_models(self, request: Request) -> Response:
        data = [{"id": model.name, "object": "model", "created": 0, "owned_by": "embedrt"} for model in self.models]
        return 200, [], orjson.dumps({"object": "list", "data": data})

    async def prometheus(self, request: Request) -> Response:
        return 200, [(b"content-type", self.metrics.content_type.encode())], self.metrics.render()

    async def openapi(self, request: Request) -> Response:
        """This API as OpenAPI 3.1, written from the route table and the request schemas that parse bodies."""
        return 200, [], self.openapi_body


TRUNCATE_FIX = 'send "truncate": true to embed its first tokens, or shorten it'
SIMILARITY_TRUNCATE_FIX = 'send "parameters": {"truncate": true} to embed its first tokens, or shorten it'
OPENAI_TRUNCATE_FIX = "this server runs with --auto-truncate false: shorten it"


@dataclass(frozen=True)
class Embedding:
    """How a route embeds its texts, and how it names them in errors."""

    normalize: bool
    truncate: bool
    direction: str
    label: Callable[[int], str]
    #: What a client refused for an over-long input should do.
    fix: str
    #: Put before every text (the request's prompt_name, else the server's default prompt).
    prompt: str = ""


@dataclass
class Work:
    """What one request computed and where its time went: TEI's timing headers and OpenAI's usage."""

    characters: int = 0
    tokens: int = 0
    #: Texts embedded and the model that embedded them, once every text is done (for the metrics).
    texts: int = 0
    model: Model | None = None
    tokenization_s: float = 0.0
    timing: Timing = field(default_factory=Timing)


def _names(models: list[Model]) -> dict[str, Model]:
    """Each model by its served name, and by its bundle's own id where that differs and is unambiguous."""
    lookup: dict[str, Model] = {}
    for model in models:
        if model.name in lookup:
            raise InputError(f"two bundles would both be served as {model.name!r}: name them apart with NAME=DIRECTORY")
        lookup[model.name] = model
    own: dict[str, list[Model]] = {}
    for model in models:
        own.setdefault(model_name(model.encoder), []).append(model)
    for name, owners in own.items():
        if name not in lookup and len(owners) == 1:
            lookup[name] = owners[0]
    return lookup


def _labels(name: str) -> Callable[[int], str]:
    return lambda index: f"{name}[{index}]"


def _similarity_label(index: int) -> str:
    """/similarity embeds the source first, then the sentences: name each as the client sent it."""
    return "inputs.source_sentence" if index == 0 else f"inputs.sentences[{index - 1}]"


def _first(*values: bool | None) -> bool:
    """The first value given: a request's own, else the server's default (the last)."""
    return next(value for value in values if value is not None)


def _tokens(text: str, encoding: Encoding, special_tokens: bool) -> list[dict[str, Any]]:
    """TEI's token records: id, the text it covers (or the special token), special, start and stop."""
    records = []
    for token_id, token, special, (start, stop) in zip(
        encoding.ids, encoding.tokens, encoding.special_tokens_mask, encoding.offsets, strict=True
    ):
        if special and not special_tokens:
            continue
        records.append(
            {
                "id": token_id,
                "text": token if special else text[start:stop],
                "special": bool(special),
                "start": None if special else start,
                "stop": None if special else stop,
            }
        )
    return records
