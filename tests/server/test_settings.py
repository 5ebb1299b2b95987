"""Serve settings: flag over EMBEDRT_* variable over default, one-line errors naming the source."""

from __future__ import annotations

import dataclasses

import pytest

from embedrt.cli import build_parser
from embedrt.errors import InputError
from embedrt.server.settings import OPTIONS, ServerSettings, resolve_settings

ISSUE_FLAGS = (
    "--precision",
    "--host",
    "--port",
    "--api-key",
    "--max-batch-tokens",
    "--max-wait-ms",
    "--max-concurrent-requests",
    "--max-client-batch-size",
    "--max-input-chars",
    "--threads",
)


def parse(*argv: str) -> dict:
    return vars(build_parser().parse_args(["serve", *argv]))


def test_every_issue_flag_exists_and_maps_to_a_setting():
    fields = {field.name for field in dataclasses.fields(ServerSettings)}
    flags = {option.flag for option in OPTIONS}
    assert set(ISSUE_FLAGS) <= flags
    assert {option.field for option in OPTIONS} <= fields
    assert {option.env for option in OPTIONS} >= {"EMBEDRT_PORT", "EMBEDRT_API_KEY", "EMBEDRT_MAX_WAIT_MS"}


def test_defaults_bind_to_loopback():
    settings = resolve_settings(parse("bundle"), environ={})
    assert settings == ServerSettings(bundle="bundle")
    assert settings.host == "127.0.0.1" and settings.api_key is None


def test_environment_fills_what_flags_leave_out():
    env = {"EMBEDRT_BUNDLE": "b", "EMBEDRT_PORT": "9000", "EMBEDRT_API_KEY": "s3cret", "EMBEDRT_MAX_WAIT_MS": "7"}
    settings = resolve_settings(parse("--port", "9100"), environ=env)
    assert (settings.bundle, settings.port, settings.api_key, settings.max_wait_ms) == ("b", 9100, "s3cret", 7)
    assert "s3cret" not in str(settings.public())


def test_batch_invariance_is_on_unless_turned_off():
    assert resolve_settings(parse("b"), environ={}).batch_invariant is True
    assert resolve_settings(parse("b", "--batch-invariant", "false"), environ={}).batch_invariant is False
    assert resolve_settings(parse("b"), environ={"EMBEDRT_BATCH_INVARIANT": "0"}).batch_invariant is False
    assert resolve_settings(parse("b", "--batch-invariant"), environ={"EMBEDRT_BATCH_INVARIANT": "0"}).batch_invariant


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (("b", "--port", "70000"), {}, "--port: expected a number between 0 and 65535"),
        (("b",), {"EMBEDRT_MAX_BATCH_TOKENS": "lots"}, "EMBEDRT_MAX_BATCH_TOKENS: expected a whole number"),
        (("b",), {"EMBEDRT_THREADS": "0"}, "EMBEDRT_THREADS: expected a number >= 1"),
        (("b", "--precision", "fp64"), {}, "--precision: unknown precision .fp64.; use one of: auto, fp32, int8, fp16"),
        (("b", "--host", " "), {}, "--host: expected a non-empty value"),
        ((), {}, "no bundle given"),
    ],
)
def test_bad_values_name_their_source(argv, env, message):
    with pytest.raises(InputError, match=message):
        resolve_settings(parse(*argv), environ=env)


def test_tei_options_and_the_routes_in_help(capsys):
    settings = resolve_settings(parse("b", "--served-model-name", "my-model", "--access-log"), environ={})
    assert settings.served_model_name == "my-model" and settings.access_log is True
    assert settings.auto_truncate is True and settings.max_openai_batch_size == 2048  # as TEI and OpenAI
    assert settings.max_input_chars is None  # 250 x the model's max tokens, TEI's rule
    assert resolve_settings(parse("b"), environ={"EMBEDRT_AUTO_TRUNCATE": "false"}).auto_truncate is False
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    shown = capsys.readouterr().out
    from embedrt.server.routes import ROUTES

    for route in ROUTES:
        assert f"{route.method:<5}{route.path} " in shown, route
