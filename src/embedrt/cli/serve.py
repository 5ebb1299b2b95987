"""``embedrt serve BUNDLE``: the HTTP server; every flag also reads its ``EMBEDRT_*`` variable."""

from __future__ import annotations

import argparse

from embedrt.extras import needs
from embedrt.server.routes import describe
from embedrt.server.settings import OPTIONS, ServerSettings


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help=f"HTTP server: OpenAI- and TEI-compatible embeddings ({needs('server')})",
        description="Serve a bundle over HTTP with dynamic batching, for OpenAI and text-embeddings-inference "
        "clients. Every flag can also be set by its EMBEDRT_* variable; a flag wins.\n\nroutes:\n" + describe(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "bundle",
        nargs="*",
        default=None,
        metavar="BUNDLE",
        help="bundle directory, or NAME=DIRECTORY to serve it as NAME; several are served side by side, the first "
        "by default (or EMBEDRT_BUNDLE)",
    )
    for option in OPTIONS:
        default = ServerSettings.__dataclass_fields__[option.field].default
        shown = "" if default is None or option.field == "api_key" else f", default {default}"
        # Parsed later, with the variables, by resolve_settings: a flag stays a string here. A yes/no
        # option given alone (--split-client-batches) means yes.
        switch = {"nargs": "?", "const": "true"} if option.metavar == "BOOL" else {}
        p.add_argument(
            option.flag, default=None, metavar=option.metavar, help=f"{option.help} ({option.env}{shown})", **switch
        )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from embedrt.server import require_server_extra
    from embedrt.server.settings import resolve_settings

    require_server_extra()
    from embedrt.server.serve import serve

    return serve(resolve_settings(vars(args)))
