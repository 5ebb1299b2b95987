"""The wire dialects, declared once: each request body is a table of fields that both parses a body
and writes its JSON Schema for ``/openapi.json``, so the document cannot drift from what the server takes.

Bodies are parsed with orjson, which cannot be driven into recursion (it refuses nesting deeper than
1,024) or into Python's integer digit limit, and refuses invalid UTF-8 and lone surrogates. Each
field kind checks its value by hand, so every refusal names its field in words a client can act on,
and limits (texts per request) are checked before any work. Status codes follow TEI's router: a
wrong value or too many inputs 422, no input or an empty string 400.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import orjson

from embedrt.server.errors import ErrorKind, ServerError

ENCODING_FORMATS = {"float": "float", "base64": "base64"}
TRUNCATION_DIRECTIONS = {"right": "right", "Right": "right", "left": "left", "Left": "left"}
#: TEI's bound on characters per input: 250 x the model's max_input_length (``MAX_CHAR_MULTIPLIER``).
CHARS_PER_TOKEN = 250
#: UTF-16 surrogate code points: a str holding one cannot be encoded as UTF-8.
_SURROGATE = re.compile("[\ud800-\udfff]")
#: What to tell a client that sent token ids (langchain's OpenAIEmbeddings does by default).
TOKEN_IDS_FIX = (
    "this server takes text and tokenizes it with the model's own tokenizer, token ids from another "
    "tokenizer would embed the wrong words: send strings (langchain's OpenAIEmbeddings: pass "
    "check_embedding_ctx_length=False)"
)


@dataclass(frozen=True)
class Limits:
    """What one route of this server takes: the model's size and texts per request."""

    dim: int
    #: Texts per request (None: no limit but the payload's).
    max_items: int | None
    #: The flag that sets ``max_items``, for messages.
    items_flag: str = "--max-client-batch-size"
    #: The model's prompt names (``prompt_name`` takes one of them).
    prompts: tuple[str, ...] = ()


def _invalid(message: str, param: str) -> ServerError:
    return ServerError(ErrorKind.VALIDATION, message, param)


def top_field(where: str) -> str:
    """The top-level field of a path such as ``inputs.sentences[2]``."""
    return re.split(r"[.\[]", where, maxsplit=1)[0]


def _show(value: Any) -> str:
    """A value as a client wrote it, short enough for a one-line message."""
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", list: "an array", dict: "an object"}.get(
        type(value), "a string"
    )


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` or null (an absent field's default), as OpenAI's and TEI's servers take it."""
    kind = schema.get("type")
    if kind == "null":
        return schema
    if not isinstance(kind, str):
        return {"anyOf": [schema, {"type": "null"}]}
    nullable = {**schema, "type": [kind, "null"]}
    if "enum" in schema:
        nullable["enum"] = [*schema["enum"], None]
    return nullable


# ------------------------------------------------------------------------------------------ field kinds
class Kind(Protocol):
    """How one field's value is checked, and its JSON Schema. ``None`` (absent or null) never reaches parse."""

    @property
    def expects(self) -> str: ...

    def parse(self, value: Any, where: str, limits: Limits) -> Any: ...

    def schema(self, limits: Limits) -> dict[str, Any]: ...


def _text(value: Any, where: str) -> str:
    """One input text: a non-empty string UTF-8 can encode."""
    if not isinstance(value, str):
        hint = f"; {TOKEN_IDS_FIX}" if isinstance(value, (int, list)) and not isinstance(value, bool) else ""
        raise _invalid(f"'{where}' is {_json_type(value)}, expected a string{hint}", top_field(where))
    if not value:
        raise ServerError(
            ErrorKind.EMPTY, f"'{where}' is an empty string; send text (OpenAI and TEI refuse it too)", top_field(where)
        )
    found = _SURROGATE.search(value)
    if found:
        raise _invalid(
            f"'{where}' is not valid Unicode: character {found.start()} is a lone surrogate "
            f"({found.group()!r}), which UTF-8 cannot encode; fix the text's decoding",
            top_field(where),
        )
    return value


def _token_ids(values: list[Any]) -> bool:
    return all(isinstance(value, int) and not isinstance(value, bool) for value in values)


@dataclass(frozen=True)
class Text:
    expects = "a string"

    def parse(self, value: Any, where: str, limits: Limits) -> str:
        return _text(value, where)

    def schema(self, limits: Limits) -> dict[str, Any]:
        return {"type": "string", "minLength": 1}


@dataclass(frozen=True)
class Texts:
    """Input texts: a list of strings (or one string, when ``single``), within the route's count."""

    single: bool = True
    #: Texts the route adds to the count (``/similarity``'s source sentence).
    reserve: int = 0

    @property
    def expects(self) -> str:
        return "a string or a list of strings" if self.single else "a list of strings"

    def parse(self, value: Any, where: str, limits: Limits) -> list[str]:
        if isinstance(value, str) and self.single:
            return [_text(value, f"{where}[0]")]
        if not isinstance(value, list):
            raise _invalid(f"'{where}' must be {self.expects}, got {_json_type(value)}", top_field(where))
        if not value:
            raise ServerError(
                ErrorKind.EMPTY, f"'{where}' is an empty list; send at least one string", top_field(where)
            )
        if _token_ids(value) or all(isinstance(item, list) and item and _token_ids(item) for item in value):
            raise _invalid(f"'{where}' holds token ids, not text: {TOKEN_IDS_FIX}", top_field(where))
        count = len(value) + self.reserve
        if limits.max_items is not None and count > limits.max_items:
            raise _invalid(
                f"'{where}' has {len(value)} items: batch size {count} > maximum allowed batch size "
                f"{limits.max_items} ({limits.items_flag}); split the request",
                top_field(where),
            )
        return [_text(item, f"{where}[{index}]") for index, item in enumerate(value)]

    def schema(self, limits: Limits) -> dict[str, Any]:
        items: dict[str, Any] = {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1}
        if limits.max_items is not None:
            items["maxItems"] = limits.max_items - self.reserve
        return {"oneOf": [{"type": "string", "minLength": 1}, items]} if self.single else items


@dataclass(frozen=True)
class Flag:
    expects = "true or false"

    def parse(self, value: Any, where: str, limits: Limits) -> bool:
        if not isinstance(value, bool):
            raise _invalid(f"'{where}' must be true or false, got {_show(value)}", top_field(where))
        return value

    def schema(self, limits: Limits) -> dict[str, Any]:
        return {"type": "boolean"}


@dataclass(frozen=True)
class Choice:
    """One of a few strings; ``options`` maps each accepted spelling to the value routes see."""

    options: Mapping[str, str]
    shown: str

    @property
    def expects(self) -> str:
        return self.shown

    def parse(self, value: Any, where: str, limits: Limits) -> str:
        if not isinstance(value, str) or value not in self.options:
            raise _invalid(f"'{where}' must be {self.shown}, got {_show(value)}", top_field(where))
        return self.options[value]

    def schema(self, limits: Limits) -> dict[str, Any]:
        return {"type": "string", "enum": list(self.options)}


@dataclass(frozen=True)
class Name:
    expects = "a string"

    def parse(self, value: Any, where: str, limits: Limits) -> str:
        if not isinstance(value, str):
            raise _invalid(f"'{where}' must be a string, got {_json_type(value)}", top_field(where))
        return value

    def schema(self, limits: Limits) -> dict[str, Any]:
        return {"type": "string"}


@dataclass(frozen=True)
class Dimensions:
    """OpenAI's and TEI's ``dimensions``: only the model's own size, as the model is not Matryoshka-trained."""

    expects = "a whole number"

    def parse(self, value: Any, where: str, limits: Limits) -> int:
        if type(value) is not int or value != limits.dim:
            raise _invalid(
                f"'{where}' must be {limits.dim} or left out, got {_show(value)}: this model is not "
                f"Matryoshka-trained, so its vectors cannot be shortened; it gives {limits.dim} dimensions",
                top_field(where),
            )
        return value

    def schema(self, limits: Limits) -> dict[str, Any]:
        return {"type": "integer", "enum": [limits.dim]}


@dataclass(frozen=True)
class PromptName:
    """TEI's ``prompt_name``: one of the prompts the model defines (``embedrt info`` lists them)."""

    expects = "one of the model's prompt names"

    def parse(self, value: Any, where: str, limits: Limits) -> str:
        if not isinstance(value, str) or value not in limits.prompts:
            names = ", ".join(repr(name) for name in limits.prompts)
            have = f"it has: {names}" if names else "its source model defines none"
            raise _invalid(
                f"'{where}' must name one of this model's prompts ({have}), got {_show(value)}; or leave it out",
                top_field(where),
            )
        return value

    def schema(self, limits: Limits) -> dict[str, Any]:
        return {"type": "string", "enum": list(limits.prompts)} if limits.prompts else {"type": "null"}


@dataclass(frozen=True)
class Field:
    """One member of a request body; ``default`` is what an absent or null value means."""

    name: str
    kind: Kind
    required: bool = False
    default: Any = None
    doc: str = ""


@dataclass(frozen=True)
class Body:
    """A JSON object of :class:`Field`\\ s; unknown members are ignored, as OpenAI's and TEI's servers do."""

    name: str
    fields: tuple[Field, ...]
    doc: str = ""
    expects = "an object"

    def parse(self, value: Any, where: str, limits: Limits) -> dict[str, Any]:
        if not isinstance(value, dict):
            names = " and ".join(f"'{field.name}'" for field in self.fields if field.required)
            raise _invalid(f"'{where}' must be an object with {names}, got {_json_type(value)}", top_field(where))
        parsed = {}
        for field in self.fields:
            path = f"{where}.{field.name}" if where else field.name
            given = value.get(field.name)
            if given is None:
                if field.required:
                    raise _invalid(f"'{path}' is required: {field.kind.expects}", top_field(path))
                parsed[field.name] = field.default
            else:
                parsed[field.name] = field.kind.parse(given, path, limits)
        return parsed

    def schema(self, limits: Limits) -> dict[str, Any]:
        properties = {}
        for field in self.fields:
            schema = field.kind.schema(limits)
            if not field.required:
                schema = _nullable(schema)
            if field.default is not None:
                schema["default"] = field.default
            if field.doc:
                schema["description"] = field.doc
            properties[field.name] = schema
        required = [field.name for field in self.fields if field.required]
        return {"type": "object", "properties": properties, "required": required, "description": self.doc}

    def read(self, body: dict[str, Any], limits: Limits) -> dict[str, Any]:
        """The request body's fields, checked, with defaults for what it leaves out."""
        return self.parse(body, "", limits)


# ------------------------------------------------------------------------------------------ the requests
_TRUNCATE = Field(
    "truncate", Flag(), doc="cut inputs longer than the model takes instead of refusing them (default: --auto-truncate)"
)
_DIRECTION = Field(
    "truncation_direction",
    Choice(TRUNCATION_DIRECTIONS, "'Right' or 'Left'"),
    default="right",
    doc="Right keeps an over-long input's start, Left its end",
)
_PROMPT = Field(
    "prompt_name",
    PromptName(),
    doc="one of the model's prompts (see /info), put before every input; default: --default-prompt-name, else the "
    "model's own default prompt",
)
_DIMENSIONS = Field("dimensions", Dimensions(), doc="the model's own size only: it is not Matryoshka-trained")

OPENAI = Body(
    "OpenAIRequest",
    (
        Field("input", Texts(), required=True, doc="the texts; token-id arrays are refused"),
        Field(
            "model", Name(), doc="the served model's name or alias (default: the first); any name when one is served"
        ),
        Field("encoding_format", Choice(ENCODING_FORMATS, "'float' or 'base64'"), default="float"),
        _DIMENSIONS,
        Field("user", Name(), doc="ignored"),
    ),
    "OpenAI's embeddings request; vectors come back unit length, inputs truncated as --auto-truncate says",
)
EMBED = Body(
    "EmbedRequest",
    (
        Field("inputs", Texts(), required=True),
        Field("normalize", Flag(), default=True),
        _TRUNCATE,
        _DIRECTION,
        _DIMENSIONS,
        _PROMPT,
    ),
    "TEI's embed request",
)
#: /similarity reads truncation from ``parameters`` (TEI) or, as embedrt did before, from the top level.
_SIMILARITY_DIRECTION = Field("truncation_direction", _DIRECTION.kind, doc="Right (default) or Left")
_PARAMETERS = Body("SimilarityParameters", (_TRUNCATE, _SIMILARITY_DIRECTION, _PROMPT))
SIMILARITY = Body(
    "SimilarityRequest",
    (
        Field(
            "inputs",
            Body(
                "SimilarityInput",
                (
                    Field("source_sentence", Text(), required=True),
                    Field("sentences", Texts(single=False, reserve=1), required=True),
                ),
            ),
            required=True,
        ),
        Field("parameters", _PARAMETERS, doc="truncate, truncation_direction"),
        Field("truncate", Flag(), doc="embedrt's earlier place for parameters.truncate, which wins"),
        Field("truncation_direction", _DIRECTION.kind, doc="the same for parameters.truncation_direction"),
    ),
    "TEI's similarity request",
)
TOKENIZE = Body(
    "TokenizeRequest",
    (Field("inputs", Texts(), required=True), Field("add_special_tokens", Flag(), default=True), _PROMPT),
    "TEI's tokenize request",
)
#: Every request body by the name :data:`embedrt.server.routes.ROUTES` gives it.
REQUESTS: dict[str, Body] = {"openai": OPENAI, "embed": EMBED, "similarity": SIMILARITY, "tokenize": TOKENIZE}


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


def fit(
    texts: list[str], truncate: bool, direction: str, limit: int, label: Callable[[int], str], fix: str
) -> list[str]:
    """Texts within ``limit`` characters: cut to it when truncating (bounded tokenizer work), else a 422.

    As TEI: with truncation an over-long text is cut (its start kept, or its end for ``left``) before
    tokenizing, never refused; without, it is refused, naming the input and ``fix``.
    """
    fitted = texts
    for index, text in enumerate(texts):
        if len(text) <= limit:
            continue
        if not truncate:
            raise _invalid(
                f"'{label(index)}' has {len(text)} characters, more than the {limit} this server takes without "
                f"truncation (--max-input-chars); {fix}",
                top_field(label(index)),
            )
        if fitted is texts:
            fitted = list(texts)
        fitted[index] = text[:limit] if direction == "right" else text[-limit:]
    return fitted


# ------------------------------------------------------------------------------------------ responses
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


_VECTOR = {"type": "array", "items": {"type": "number"}}
_TOKEN = {
    "type": "object",
    "required": ["id", "text", "special", "start", "stop"],
    "properties": {
        "id": {"type": "integer"},
        "text": {"type": "string"},
        "special": {"type": "boolean"},
        "start": {"type": ["integer", "null"]},
        "stop": {"type": ["integer", "null"]},
    },
}
#: JSON Schemas of the 200 bodies, by the name :data:`embedrt.server.routes.ROUTES` gives them.
RESPONSES: dict[str, dict[str, Any]] = {
    "openai": {
        "type": "object",
        "required": ["object", "data", "model", "usage"],
        "properties": {
            "object": {"const": "list"},
            "data": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["object", "index", "embedding"],
                    "properties": {
                        "object": {"const": "embedding"},
                        "index": {"type": "integer"},
                        "embedding": {"oneOf": [_VECTOR, {"type": "string", "contentEncoding": "base64"}]},
                    },
                },
            },
            "model": {"type": "string"},
            "usage": {
                "type": "object",
                "required": ["prompt_tokens", "total_tokens"],
                "properties": {"prompt_tokens": {"type": "integer"}, "total_tokens": {"type": "integer"}},
            },
        },
    },
    "embed": {"type": "array", "items": _VECTOR},
    "similarity": {"type": "array", "items": {"type": "number"}},
    "tokenize": {"type": "array", "items": {"type": "array", "items": _TOKEN}},
    "health": {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}},
    "info": {"type": "object", "required": ["model_id", "dim", "max_input_length"]},
    "models": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": {"type": "object"}}},
    },
    "metrics": {"type": "string"},
    "object": {"type": "object"},
}
#: Error bodies: TEI's and, on the OpenAI routes, OpenAI's.
TEI_ERROR = {
    "type": "object",
    "required": ["error", "error_type"],
    "properties": {"error": {"type": "string"}, "error_type": {"type": "string"}},
}
OPENAI_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
