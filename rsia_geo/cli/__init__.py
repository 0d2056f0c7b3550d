"""Command-line interface: ``rsia-geo`` (also ``python -m rsia_geo``).

The CLI is an edge: it parses arguments, calls the library, and maps exceptions to exit codes
through one table (:data:`EXIT_CODES`). The library never exits or prints. Each command group
lives in its own module with a ``register(sub)`` function (``catalog``, ``ingest``, ``search``,
``training``, ``serve``), and the options they share are declared once in
:mod:`rsia_geo.cli.options`, as rasterio's ``rio`` commands share ``rio/options.py``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from rsia_geo._error_codes import code_for
from rsia_geo.errors import (
    AudioError,
    CatalogError,
    DependencyNotFoundError,
    IndexLockedError,
    IndexNotFoundError,
    IndexUnavailableError,
    InvalidArgumentError,
    InvalidRegionError,
    InvalidTileSpecError,
    ModelMismatchError,
    RasterError,
    RsiaError,
)

__all__ = ["EXIT_CODES", "build_parser", "main"]

EXIT_CODES: dict[type[BaseException], int] = {
    IndexLockedError: 6,
    IndexUnavailableError: 7,
    IndexNotFoundError: 10,
    ModelMismatchError: 8,
    AudioError: 9,
    DependencyNotFoundError: 3,
    InvalidRegionError: 2,
    InvalidArgumentError: 2,
    InvalidTileSpecError: 2,
    CatalogError: 4,
    RasterError: 5,
    RsiaError: 1,
}
"""Exit code per exception class; the most specific match wins."""


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser.

    Returns:
        The parser with all subcommands, in the order ``--help`` lists them.
    """
    from rsia_geo import __version__
    from rsia_geo.cli import catalog, ingest, search, serve, training

    parser = argparse.ArgumentParser(
        prog="rsia-geo",
        description="Spoken, region-restricted search over your own georeferenced imagery.",
    )
    parser.add_argument("--version", action="version", version=f"rsia_geo {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (catalog, training, ingest, search, serve):
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The process exit code: 0 on success, see :data:`EXIT_CODES` otherwise.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except RsiaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return code_for(exc, EXIT_CODES, 1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`rsia-geo search ... | head`): stop quietly, as cat does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
