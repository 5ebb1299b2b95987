"""The two wire dialects: OpenAI ``/v1/embeddings`` and TEI ``/embed`` request parsing and response bodies.

Parsing is done by hand rather than by pydantic models so every refusal names its field in words a
client can act on, and limits (texts per request, characters per text) are checked before any work.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from embedrt.server.errors import ErrorKind, ServerError
from embedrt.server.settings import ServerSettings

ENCODING_FORMATS = ("float", "base64")


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


def _invalid(message: str, param: str) -> ServerError:
    return ServerError(ErrorKind.VALIDATION, message, param)


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a 422 saying what is wrong with it."""
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise _invalid(f"the request body is not valid JSON ({err}); send a JSON object", "body") from err
    if not isinstance(body, dict):
        raise _invalid(f"the request body must be a JSON object, got a JSON {type(body).__name__}", "body")
    return body


def _texts(value: Any, field: str, settings: ServerSettings) -> list[str]:
    """A string or a non-empty list of strings, within the request limits."""
    if value is None:
        raise _invalid(f"'{field}' is required: a string or a list of strings", field)
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list):
        raise _invalid(f"'{field}' must be a string or a list of strings, got {type(value).__name__}", field)
    if not texts:
        raise _invalid(f"'{field}' is an empty list; send at least one string", field)
    if len(texts) > settings.max_client_batch_size:
        raise ServerError(
            ErrorKind.TOO_LARGE,
            f"'{field}' has {len(texts)} items; this server takes at most {settings.max_client_batch_size} per "
            "request (--max-client-batch-size): split the request",
            field,
        )
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            hint = "; token-id arrays are not supported, send the text" if isinstance(text, (int, list)) else ""
            raise _invalid(f"'{field}[{index}]' is {type(text).__name__}, expected a string{hint}", field)
        if len(text) > settings.max_input_chars:
            raise ServerError(
                ErrorKind.TOO_LARGE,
                f"'{field}[{index}]' has {len(text)} characters; the limit is {settings.max_input_chars} "
                "(--max-input-chars): shorten or split it",
                field,
            )
    return texts


def _bool(body: dict[str, Any], field: str, default: bool) -> bool:
    value = body.get(field)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _invalid(f"'{field}' must be true or false, got {json.dumps(value)[:40]}", field)
    return value


def parse_openai(body: dict[str, Any], settings: ServerSettings, dim: int) -> OpenAIRequest:
    """Validate an OpenAI embeddings request (``input``, ``model``, ``encoding_format``, ``dimensions``)."""
    texts = _texts(body.get("input"), "input", settings)
    encoding_format = body.get("encoding_format") or "float"
    if encoding_format not in ENCODING_FORMATS:
        raise _invalid(
            f"'encoding_format' must be 'float' or 'base64', got {json.dumps(encoding_format)[:40]}", "encoding_format"
        )
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _invalid(f"'model' must be a string, got {type(model).__name__}", "model")
    dimensions = body.get("dimensions")
    if dimensions is not None and (isinstance(dimensions, bool) or dimensions != dim):
        raise _invalid(
            f"'dimensions' must be {dim} (this model's size) or omitted, got {json.dumps(dimensions)[:40]}",
            "dimensions",
        )
    return OpenAIRequest(texts, encoding_format, model)


def parse_tei(body: dict[str, Any], settings: ServerSettings) -> TEIRequest:
    """Validate a TEI ``/embed`` request (``inputs``, ``normalize`` default true, ``truncate`` default false)."""
    texts = _texts(body.get("inputs"), "inputs", settings)
    direction = body.get("truncation_direction")
    if direction is not None and direction not in ("right", "Right"):
        raise _invalid(
            "'truncation_direction' must be 'right': this server truncates the end of a text", "truncation_direction"
        )
    if body.get("prompt_name") is not None:
        raise _invalid("'prompt_name' is not supported: put the prompt into the text", "prompt_name")
    return TEIRequest(texts, _bool(body, "normalize", True), _bool(body, "truncate", False))


def openai_body(vectors: np.ndarray, encoding_format: str, model: str, tokens: int) -> bytes:
    """The OpenAI ``list`` response; base64 is little-endian float32, as the official client decodes it."""
    rows = []
    for index, row in enumerate(vectors):
        if encoding_format == "base64":
            embedding = '"' + base64.b64encode(row.astype("<f4").tobytes()).decode("ascii") + '"'
        else:
            embedding = json.dumps(row.tolist())
        rows.append(f'{{"object":"embedding","index":{index},"embedding":{embedding}}}')
    usage = f'{{"prompt_tokens":{tokens},"total_tokens":{tokens}}}'
    return f'{{"object":"list","data":[{",".join(rows)}],"model":{json.dumps(model)},"usage":{usage}}}'.encode()


def tei_body(vectors: np.ndarray) -> bytes:
    """TEI's response: a JSON list of vectors, one per input, in order."""
    return json.dumps(vectors.tolist()).encode()
