"""The wire dialects: OpenAI ``/v1/embeddings``, TEI ``/embed``, ``/similarity`` and ``/tokenize``.

Bodies are parsed with orjson, which cannot be driven into recursion (it refuses nesting deeper than
1,024) or into Python's integer digit limit, and refuses invalid UTF-8 and lone surrogates. Parsing is
done by hand rather than by pydantic models so every refusal names its field in words a client can act
on, and limits (texts per request, characters per text) are checked before any work.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from embedrt.server.errors import ErrorKind, ServerError
from embedrt.server.settings import ServerSettings

ENCODING_FORMATS = ("float", "base64")
TRUNCATION_DIRECTIONS = {"right": "right", "Right": "right", "left": "left", "Left": "left"}
#: UTF-16 surrogate code points: a str holding one cannot be encoded as UTF-8.
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class OpenAIRequest:
    texts: list[str]
    encoding_format: str
    model: str | None


@dataclass(frozen=True)
class TEIRequest:
    texts: list[str]
    normalize: bool
    truncate: bool
    direction: str


@dataclass(frozen=True)
class SimilarityRequest:
    source: str
    sentences: list[str]
    truncate: bool
    direction: str


@dataclass(frozen=True)
class TokenizeRequest:
    texts: list[str]
    add_special_tokens: bool
    single: bool


def _invalid(message: str, param: str) -> ServerError:
    return ServerError(ErrorKind.VALIDATION, message, param)


def _show(value: Any) -> str:
    """A value as a client wrote it, short enough for a one-line message."""
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a 422 saying what is wrong with it."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        if "surrogate" not in str(err):
            raise _invalid(f"the request body is not valid JSON ({err}); send a JSON object", "body") from err
        # A lone surrogate ("\ud800") in a string: JSON allows the escape, UTF-8 cannot encode it. Parse
        # with the standard library, which accepts it, so the refusal can name the input that holds it.
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):  # only for what orjson already refused: never a 5xx
            raise _invalid(f"the request body is not valid JSON ({err}); send a JSON object", "body") from err
    if not isinstance(body, dict):
        kind = {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(body), "number")
        raise _invalid(f"the request body must be a JSON object, got a JSON {kind}", "body")
    return body


def _text(value: Any, where: str, field: str, settings: ServerSettings) -> str:
    if not isinstance(value, str):
        hint = "; token-id arrays are not supported, send the text" if isinstance(value, (int, list)) else ""
        raise _invalid(f"'{where}' is {_json_type(value)}, expected a string{hint}", field)
    if len(value) > settings.max_input_chars:
        raise ServerError(
            ErrorKind.TOO_LARGE,
            f"'{where}' has {len(value)} characters; the limit is {settings.max_input_chars} "
            "(--max-input-chars): shorten or split it",
            field,
        )
    found = _SURROGATE.search(value)
    if found:
        raise _invalid(
            f"'{where}' is not valid Unicode: character {found.start()} is a lone surrogate "
            f"({found.group()!r}), which UTF-8 cannot encode; fix the text's decoding",
            field,
        )
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", list: "an array", dict: "an object"}.get(
        type(value), "a string"
    )


def _texts(value: Any, field: str, settings: ServerSettings) -> list[str]:
    """A string or a non-empty list of strings, within the request limits."""
    if value is None:
        raise _invalid(f"'{field}' is required: a string or a list of strings", field)
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list):
        raise _invalid(f"'{field}' must be a string or a list of strings, got {_json_type(value)}", field)
    if not texts:
        raise _invalid(f"'{field}' is an empty list; send at least one string", field)
    if len(texts) > settings.max_client_batch_size and not settings.split_client_batches:
        raise ServerError(
            ErrorKind.TOO_LARGE,
            f"'{field}' has {len(texts)} items; this server takes at most {settings.max_client_batch_size} per "
            "request (--max-client-batch-size): split the request",
            field,
        )
    return [_text(text, f"{field}[{index}]", field, settings) for index, text in enumerate(texts)]


def _bool(body: dict[str, Any], field: str, default: bool) -> bool:
    value = body.get(field)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _invalid(f"'{field}' must be true or false, got {_show(value)}", field)
    return value


def _direction(body: dict[str, Any]) -> str:
    value = body.get("truncation_direction")
    if value is None:
        return "right"
    if not isinstance(value, str) or value not in TRUNCATION_DIRECTIONS:
        raise _invalid(f"'truncation_direction' must be 'Right' or 'Left', got {_show(value)}", "truncation_direction")
    return TRUNCATION_DIRECTIONS[value]


def _no_prompt(body: dict[str, Any]) -> None:
    if body.get("prompt_name") is not None:
        raise _invalid("'prompt_name' is not supported: put the prompt into the text", "prompt_name")


def parse_openai(body: dict[str, Any], settings: ServerSettings, dim: int) -> OpenAIRequest:
    """Validate an OpenAI embeddings request (``input``, ``model``, ``encoding_format``, ``dimensions``)."""
    texts = _texts(body.get("input"), "input", settings)
    encoding_format = body.get("encoding_format") or "float"
    if encoding_format not in ENCODING_FORMATS:
        raise _invalid(
            f"'encoding_format' must be 'float' or 'base64', got {_show(encoding_format)}", "encoding_format"
        )
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _invalid(f"'model' must be a string, got {_json_type(model)}", "model")
    dimensions = body.get("dimensions")
    if dimensions is not None and (type(dimensions) is not int or dimensions != dim):
        raise _invalid(
            f"'dimensions' must be {dim} (this model's size) or omitted, got {_show(dimensions)}", "dimensions"
        )
    return OpenAIRequest(texts, encoding_format, model)


def parse_tei(body: dict[str, Any], settings: ServerSettings) -> TEIRequest:
    """Validate a TEI ``/embed`` request (``inputs``, ``normalize`` default true, ``truncate`` default false)."""
    texts = _texts(body.get("inputs"), "inputs", settings)
    _no_prompt(body)
    return TEIRequest(texts, _bool(body, "normalize", True), _bool(body, "truncate", False), _direction(body))


def parse_similarity(body: dict[str, Any], settings: ServerSettings) -> SimilarityRequest:
    """Validate TEI's ``/similarity``: ``{"inputs": {"source_sentence": str, "sentences": [str, ...]}}``."""
    inputs = body.get("inputs")
    if not isinstance(inputs, dict):
        raise _invalid(
            f"'inputs' must be an object with 'source_sentence' and 'sentences', got {_json_type(inputs)}", "inputs"
        )
    source = _text(inputs.get("source_sentence"), "inputs.source_sentence", "inputs", settings)
    sentences = inputs.get("sentences")
    if not isinstance(sentences, list):
        raise _invalid(f"'inputs.sentences' must be a list of strings, got {_json_type(sentences)}", "inputs")
    checked = _texts(sentences, "inputs.sentences", settings)
    _no_prompt(body)
    return SimilarityRequest(source, checked, _bool(body, "truncate", False), _direction(body))


def parse_tokenize(body: dict[str, Any], settings: ServerSettings) -> TokenizeRequest:
    """Validate TEI's ``/tokenize``: ``inputs`` (a string or list), ``add_special_tokens`` default true."""
    inputs = body.get("inputs")
    texts = _texts(inputs, "inputs", settings)
    _no_prompt(body)
    return TokenizeRequest(texts, _bool(body, "add_special_tokens", True), isinstance(inputs, str))


def openai_body(vectors: np.ndarray, encoding_format: str, model: str, tokens: int) -> bytes:
    """The OpenAI ``list`` response; base64 is little-endian float32, as the official client decodes it.

    Floats are written as the shortest decimal that reads back as the same float32.
    """
    if encoding_format == "base64":
        embeddings: list[Any] = [base64.b64encode(row.astype("<f4").tobytes()).decode("ascii") for row in vectors]
    else:
        embeddings = list(vectors)
    data = [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(embeddings)]
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    body = {"object": "list", "data": data, "model": model, "usage": usage}
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def tei_body(vectors: np.ndarray) -> bytes:
    """TEI's response: a JSON list of vectors, one per input, in order."""
    return orjson.dumps(vectors, option=orjson.OPT_SERIALIZE_NUMPY)
