"""The request field tables: what they accept and refuse, and the OpenAPI document written from them."""

from __future__ import annotations

import pytest

from embedrt.server.errors import ErrorKind, ServerError
from embedrt.server.openapi import document
from embedrt.server.routes import ROUTES
from embedrt.server.schemas import EMBED, OPENAI, REQUESTS, SIMILARITY, Limits, fit

LIMITS = Limits(dim=8, max_items=4)


def refused(body, parse=EMBED.read) -> ServerError:
    with pytest.raises(ServerError) as caught:
        parse(body, LIMITS)
    return caught.value


def test_defaults_fill_what_a_body_leaves_out():
    query = EMBED.read({"inputs": "a", "normalize": None}, LIMITS)
    assert query == {"inputs": ["a"], "normalize": True, "truncate": None, "truncation_direction": "right",
                     "dimensions": None, "prompt_name": None}  # fmt: skip
    assert OPENAI.read({"input": ["a", "b"], "dimensions": 8}, LIMITS)["encoding_format"] == "float"


@pytest.mark.parametrize(
    ("body", "kind", "words"),
    [
        ({"inputs": []}, ErrorKind.EMPTY, "'inputs' is an empty list"),
        ({"inputs": ["a", ""]}, ErrorKind.EMPTY, "'inputs[1]' is an empty string"),
        ({"inputs": ["a"] * 5}, ErrorKind.VALIDATION, "batch size 5 > maximum allowed batch size 4"),
        ({"inputs": [[101, 7592]]}, ErrorKind.VALIDATION, "'inputs' holds token ids"),
        ({"inputs": [101, 7592]}, ErrorKind.VALIDATION, "check_embedding_ctx_length=False"),
        ({"inputs": [["a"]]}, ErrorKind.VALIDATION, "'inputs[0]' is an array, expected a string"),
        ({"inputs": "a", "dimensions": 4}, ErrorKind.VALIDATION, "not Matryoshka-trained"),
        ({"inputs": "a", "prompt_name": 3}, ErrorKind.VALIDATION, "'prompt_name' must name one of this model's"),
    ],
)
def test_refusals_name_the_field_with_tei_status(body, kind, words):
    error = refused(body)
    assert error.kind is kind and words in error.message


def test_similarity_counts_the_source_and_names_where():
    error = refused({"inputs": {"source_sentence": "a", "sentences": ["b"] * 4}}, SIMILARITY.read)
    assert "batch size 5 > maximum allowed batch size 4" in error.message
    error = refused({"inputs": {"source_sentence": "a", "sentences": ["b", ""]}}, SIMILARITY.read)
    assert "'inputs.sentences[1]'" in error.message
    query = SIMILARITY.read({"inputs": {"source_sentence": "a", "sentences": ["b"]}, "parameters": {"truncate": False}},
                            LIMITS)  # fmt: skip
    assert query["parameters"]["truncate"] is False


def test_fit_cuts_when_truncating_and_refuses_when_not():
    label = "inputs[{}]".format
    assert fit(["abcdef", "ab"], True, "right", 4, label, "") == ["abcd", "ab"]
    assert fit(["abcdef"], True, "left", 4, label, "") == ["cdef"]
    with pytest.raises(ServerError, match=r"'inputs\[0\]' has 6 characters"):
        fit(["abcdef"], False, "right", 4, label, "shorten it")


def test_the_document_has_every_route_and_the_limits_the_server_checks():
    doc = document(lambda route: LIMITS, "m", auth=True)
    for route in ROUTES:
        operation = doc["paths"][route.path][route.method.lower()]
        assert "200" in operation["responses"]
        if route.request:
            name = REQUESTS[route.request].name
            assert operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(name)
    inputs = doc["components"]["schemas"]["EmbedRequest"]["properties"]["inputs"]
    assert inputs["oneOf"][1]["maxItems"] == 4
    assert doc["components"]["schemas"]["OpenAIRequest"]["properties"]["dimensions"]["enum"] == [8, None]
