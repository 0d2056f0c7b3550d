"""Options and argument parsers shared by the ``rsia-geo`` commands (one definition each).

Every command that opens an index, cuts tiles or restricts a region declares those options
through these functions, so ``rsia-geo tiles`` and ``rsia-geo index`` cut the same tiles and
every region is parsed by :mod:`rsia_geo.query`.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any

from rsia_geo.errors import InvalidArgumentError, InvalidRegionError

__all__ = [
    "add_bbox",
    "add_filters",
    "add_index_args",
    "add_tile_args",
    "index_from_args",
    "parse_datetime",
    "port",
    "read_geometry",
    "read_key_file",
    "tile_spec",
]


def parse_datetime(text: str) -> _dt.datetime:
    """An ISO date or time for ``argparse`` (UTC when no zone is given).

    Args:
        text: The argument.

    Returns:
        The aware datetime.

    Raises:
        argparse.ArgumentTypeError: Not an ISO date/time (argparse names the option).
    """
    try:
        value = _dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO date/time, e.g. 2020-09-02 or 2020-09-02T10:30:00Z"
        ) from exc
    return value if value.tzinfo else value.replace(tzinfo=_dt.UTC)


def port(text: str) -> int:
    """A TCP port for ``argparse``.

    Args:
        text: The argument.

    Returns:
        The port, 1-65535.

    Raises:
        argparse.ArgumentTypeError: Not a number, or out of range.
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is outside 1-65535")
    return value


def read_geometry(path: str) -> Any:
    """A region from a GeoJSON file (geometry, Feature or FeatureCollection).

    Args:
        path: The file.

    Returns:
        The shapely geometry (:func:`rsia_geo.query.parse_geometry`).

    Raises:
        InvalidRegionError: No such file, not GeoJSON, or not a polygonal region.
    """
    from rsia_geo.query import parse_geometry

    p = Path(path)
    if not p.is_file():
        raise InvalidRegionError(
            f"--geometry {path!r} is not a file; give a GeoJSON file of the region polygon(s)"
        )
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRegionError(
            f"--geometry {path!r} is not GeoJSON ({exc}); export the region as GeoJSON"
        ) from exc
    return parse_geometry(data)


def read_key_file(path: str) -> str:
    """The service key from a file (a key is never given on the command line).

    Args:
        path: The file.

    Returns:
        The key.

    Raises:
        InvalidArgumentError: No such file, or a key shorter than 16 characters.
    """
    p = Path(path)
    if not p.is_file():
        raise InvalidArgumentError(
            f"--service-key-file {path!r} is not a file; write the key into a file (one line)"
        )
    key = p.read_text().strip()
    if len(key) < 16:
        raise InvalidArgumentError(
            f"the service key in {path!r} has {len(key)} characters; use 16 or more "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))' > key.txt)"
        )
    return key


def add_bbox(p: argparse.ArgumentParser, help: str) -> None:
    """``--bbox MINX MINY MAXX MAXY`` in lon/lat (checked by :mod:`rsia_geo.query`).

    Args:
        p: A command's parser.
        help: What the box does for this command.
    """
    p.add_argument(
        "--bbox",
        type=float,
        nargs=4,
        metavar=("MINX", "MINY", "MAXX", "MAXY"),
        default=None,
        help=help,
    )


def add_filters(p: argparse.ArgumentParser, example: str = "2020-01-01/..") -> None:
    """``--datetime`` (an interval) and ``--platform`` filters.

    Args:
        p: A command's parser.
        example: An interval shown in the help.
    """
    p.add_argument("--datetime", default=None, help=f"acquisition interval, e.g. {example}")
    p.add_argument("--platform", default=None, help="keep these STAC platforms (e.g. naip)")


def add_index_args(p: argparse.ArgumentParser) -> None:
    """Where the index is (a folder or a server) and which model encodes.

    Args:
        p: A command's parser.
    """
    p.add_argument(
        "--location", default="rsia_index", help="embedded index folder (default ./rsia_index)"
    )
    p.add_argument(
        "--url",
        default=None,
        help="Qdrant server URL instead of a folder "
        "(API key from --api-key or RSIA_QDRANT_API_KEY)",
    )
    p.add_argument("--api-key", default=None)
    p.add_argument("--collection", default="tiles", help="collection name (servers)")
    p.add_argument(
        "--checkpoint",
        default=None,
        help="model checkpoint folder (default: the shipped starter model)",
    )


def index_from_args(args: argparse.Namespace, *, create: bool = False) -> Any:
    """Open the index that :func:`add_index_args` options name.

    Args:
        args: Parsed arguments.
        create: Create an embedded index folder that does not exist.

    Returns:
        The :class:`~rsia_geo.index.TileIndex`.
    """
    from rsia_geo.index import TileIndex

    quantization = getattr(args, "quantization", None)  # `rsia-geo index` only
    if args.url:
        return TileIndex(
            url=args.url,
            api_key=args.api_key or os.environ.get("RSIA_QDRANT_API_KEY"),
            collection=args.collection,
            quantization=quantization,
        )
    return TileIndex(
        args.location, collection=args.collection, create=create, quantization=quantization
    )


def add_tile_args(p: argparse.ArgumentParser) -> None:
    """The tiling options, defaulting to the one default tiling (``tiles.DEFAULT_SPEC``).

    Args:
        p: A command's parser.
    """
    from rsia_geo.tiles import DEFAULT_SPEC as D  # the one default tiling of every edge

    p.add_argument("--size", type=float, default=D.size, help=f"tile side (default {D.size:g})")
    p.add_argument(
        "--overlap",
        type=float,
        default=None,
        help=f"overlap between neighbouring tiles, in --units (default {D.overlap / D.size:g} "
        "of a tile: a stride of half a tile)",
    )
    p.add_argument(
        "--units",
        choices=["px", "m"],
        default=D.units,
        help=f"units of size/overlap (default {D.units})",
    )
    p.add_argument(
        "--scales",
        type=int,
        nargs="+",
        default=list(D.scales),
        help="scale levels; level f covers size*f (default "
        + " ".join(str(v) for v in D.scales)
        + ")",
    )
    p.add_argument(
        "--out-size",
        type=int,
        default=D.out_size,
        help=f"output pixels per tile side (default {D.out_size})",
    )
    p.add_argument(
        "--min-valid",
        type=float,
        default=0.5,
        help="skip tiles with a smaller valid-pixel fraction (default 0.5)",
    )
    p.add_argument(
        "--scaling",
        choices=["auto", "dtype", "reflectance", "percentile"],
        default="auto",
        help="how raw values map to [0, 1] (default auto)",
    )
    p.add_argument(
        "--bands",
        nargs="+",
        default=None,
        help="bands by eo common name or band name (default red green blue)",
    )
    add_bbox(p, "only tiles intersecting this lon/lat box")


def tile_spec(args: argparse.Namespace) -> Any:
    """The :class:`~rsia_geo.tiles.TileSpec` that :func:`add_tile_args` options describe.

    Args:
        args: Parsed arguments.

    Returns:
        The spec.
    """
    from rsia_geo.tiles import DEFAULT_SPEC, TileSpec

    overlap = args.overlap
    if overlap is None:  # the default tiling's fraction of a tile, in the units asked for
        overlap = args.size * DEFAULT_SPEC.overlap / DEFAULT_SPEC.size
    return TileSpec(
        size=args.size,
        overlap=overlap,
        units=args.units,
        scales=tuple(args.scales),
        out_size=args.out_size,
        min_valid=args.min_valid,
        scaling=args.scaling,
    )
