"""What ``embedrt.server.http`` relies on in uvicorn's private httptools protocol, checked by name.

``Guarded`` subclasses ``uvicorn.protocols.http.httptools_impl.HttpToolsProtocol`` (uvicorn has no public hook
for read deadlines, a connection cap or gathered writes). When a uvicorn release renames or reshapes what
it overrides or reads, one of these tests names the change, instead of the server failing in some other way.
"""

from __future__ import annotations

import inspect
import re
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

pytest.importorskip("uvicorn")
pytest.importorskip("httptools")

from uvicorn.protocols.http import httptools_impl  # noqa: E402

import embedrt  # noqa: E402

PYPROJECT = Path(embedrt.__file__).parents[2] / "pyproject.toml"
FIX = (
    "embedrt.server.http subclasses this private uvicorn class; adapt Guarded to uvicorn "
    f"{version('uvicorn')} (or pin the tested uvicorn) and rerun tests/server/test_http.py and test_hardening.py"
)

#: Methods Guarded overrides and calls through ``super()``, with the parameters it passes.
OVERRIDDEN = {
    "connection_made": ["self", "transport"],
    "connection_lost": ["self", "exc"],
    "data_received": ["self", "data"],
    "on_message_begin": ["self"],
    "on_headers_complete": ["self"],
    "on_message_complete": ["self"],
    "on_response_complete": ["self"],
}
#: Attributes Guarded reads on the protocol (set in __init__ or connection_made) and on a request cycle.
PROTOCOL_ATTRIBUTES = ("self.loop", "self.connections", "self.transport", "self.cycle")
CYCLE_ATTRIBUTES = ("self.transport", "self.more_body", "self.response_started")


@pytest.mark.skipif(not PYPROJECT.is_file(), reason="pyproject.toml is not beside the sources (installed wheel)")
def test_the_installed_uvicorn_is_in_the_tested_range():
    text = PYPROJECT.read_text(encoding="utf-8")
    line = re.search(r'"(uvicorn[<>=!~,.0-9 ]+)"', text)
    assert line, "pyproject.toml's server extra names no bounded uvicorn"
    requirement = Requirement(line.group(1))
    assert requirement.specifier.contains(Version(version("uvicorn"))), (
        f"uvicorn {version('uvicorn')} is outside the range pyproject.toml says was tested ({requirement})"
    )


def test_the_private_protocol_class_is_where_guarded_finds_it():
    assert inspect.isclass(getattr(httptools_impl, "HttpToolsProtocol", None)), (
        f"uvicorn.protocols.http.httptools_impl.HttpToolsProtocol is gone; {FIX}"
    )
    assert inspect.isclass(getattr(httptools_impl, "RequestResponseCycle", None)), (
        f"uvicorn.protocols.http.httptools_impl.RequestResponseCycle is gone; {FIX}"
    )


@pytest.mark.parametrize("name", sorted(OVERRIDDEN))
def test_the_overridden_methods_keep_their_parameters(name):
    method = getattr(httptools_impl.HttpToolsProtocol, name, None)
    assert method is not None, f"HttpToolsProtocol.{name} is gone; {FIX}"
    parameters = list(inspect.signature(method).parameters)
    assert parameters == OVERRIDDEN[name], f"HttpToolsProtocol.{name} now takes {parameters}; {FIX}"


def test_the_attributes_guarded_reads_are_still_set():
    protocol = inspect.getsource(httptools_impl.HttpToolsProtocol)
    cycle = inspect.getsource(httptools_impl.RequestResponseCycle.__init__)
    for attribute in PROTOCOL_ATTRIBUTES:
        assert f"{attribute} =" in protocol, f"HttpToolsProtocol no longer sets {attribute}; {FIX}"
    for attribute in CYCLE_ATTRIBUTES:
        assert f"{attribute} =" in cycle, f"RequestResponseCycle no longer sets {attribute}; {FIX}"


def test_request_cycles_write_to_the_protocols_transport():
    """Gathered writes and the lingering close work because a cycle is given ``self.transport``, which
    Guarded replaces in connection_made; a cycle that took the raw transport would bypass both."""
    source = inspect.getsource(httptools_impl.HttpToolsProtocol.on_headers_complete)
    assert "transport=self.transport" in source, f"request cycles no longer get the protocol's transport; {FIX}"


def test_the_subclass_still_overrides_only_what_is_listed():
    from embedrt.server.http import Guarded

    overridden = {
        name
        for name, value in vars(Guarded).items()
        if callable(value) and hasattr(httptools_impl.HttpToolsProtocol, name) and not name.startswith("__")
    }
    assert overridden == set(OVERRIDDEN), "Guarded's overrides changed: update OVERRIDDEN in this test"


def test_a_request_being_answered_is_a_task_in_the_servers_state():
    """``serve`` tells the batcher a request is alone from ``len(server.server_state.tasks)`` (the lone request's
    event-loop path, issue 25): uvicorn must still keep one task per request there, dropped when it ends."""
    from uvicorn.server import ServerState

    assert isinstance(ServerState().tasks, set), f"uvicorn's ServerState has no set of tasks; {FIX}"
    protocol = inspect.getsource(httptools_impl.HttpToolsProtocol)
    assert "self.tasks = server_state.tasks" in protocol, f"the protocol no longer shares the server's tasks; {FIX}"
    assert "self.tasks.add(task)" in protocol and "self.tasks.discard" in protocol, (
        f"a request's task is no longer counted in the server's tasks while it runs; {FIX}"
    )
