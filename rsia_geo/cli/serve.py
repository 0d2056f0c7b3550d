"""``rsia-geo serve`` (the HTTP service) and ``rsia-geo demo`` (the main job)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rsia_geo.cli.options import add_index_args, port, read_key_file


def register(sub: Any) -> None:
    """Add ``serve`` and ``demo``.

    Args:
        sub: The ``rsia-geo`` subcommand group (``add_subparsers`` result).
    """
    sv = sub.add_parser("serve", help="HTTP search service (for the QGIS plugin)")
    add_index_args(sv)
    sv.add_argument("--host", default="127.0.0.1", help="bind address (default loopback)")
    sv.add_argument("--port", type=port, default=8765, help="TCP port 1-65535 (default 8765)")
    sv.add_argument(
        "--service-key-file",
        default=None,
        help="file holding the key clients must send (X-API-Key); required off loopback; "
        "or set RSIA_SERVICE_KEY (a key is never given on the command line, where ps shows it)",
    )
    sv.add_argument("--concurrency", type=int, default=2, help="searches at once")
    sv.set_defaults(func=_cmd_serve)

    d = sub.add_parser("demo", help="run the main job on the bundled sample data")
    d.add_argument("--workdir", default="out/demo", help="where to write outputs")
    d.add_argument(
        "--query",
        action="append",
        default=None,
        help="what to say (repeatable; default: a harbour and an airport query)",
    )
    d.add_argument("-k", type=int, default=5, help="hits to print per search")
    d.set_defaults(func=_cmd_demo)


def _cmd_serve(args: argparse.Namespace) -> int:
    from rsia_geo.service import ServiceSettings, serve

    settings = ServiceSettings.from_env(
        location=args.location,
        url=args.url,
        qdrant_api_key=args.api_key,
        collection=args.collection,
        checkpoint=args.checkpoint,
        host=args.host,
        port=args.port,
        api_key=read_key_file(args.service_key_file) if args.service_key_file else None,
        concurrency=args.concurrency,
    )
    try:
        settings.check()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not settings.url:  # a missing index is reported here, not as a server traceback
        from rsia_geo._geo import lonlat_text
        from rsia_geo.index import TileIndex

        with TileIndex(settings.location, collection=settings.collection, create=False) as idx:
            held = idx.summary()
        box = (held["extent"] or {}).get("bbox")
        where = f", {lonlat_text(box)}" if box else ""
        print(f"index {settings.location}: {held['tiles']} tiles{where}", flush=True)
    serve(settings)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from rsia_geo.demo import run_demo

    return run_demo(Path(args.workdir), queries=args.query, k=args.k)
