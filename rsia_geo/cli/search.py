"""``rsia-geo search`` and ``same-place``: queries and their hits."""

from __future__ import annotations

import argparse
from typing import Any

from rsia_geo.cli.options import (
    add_bbox,
    add_filters,
    add_index_args,
    index_from_args,
    read_geometry,
)
from rsia_geo.errors import InvalidArgumentError
from rsia_geo.pipeline import DISTINCT_PLACES


def register(sub: Any) -> None:
    """Add ``search`` and ``same-place``.

    Args:
        sub: The ``rsia-geo`` subcommand group (``add_subparsers`` result).
    """
    se = sub.add_parser("search", help="spoken (or typed) query -> georeferenced tiles")
    se.add_argument("query", nargs="?", default=None, help="audio file (WAV, FLAC, OGG, MP3)")
    se.add_argument(
        "--text",
        default=None,
        help="a typed query instead of an audio file (spoken by the bundled speech synthesis)",
    )
    add_index_args(se)
    add_bbox(se, "lon/lat region (minx > maxx crosses 180)")
    se.add_argument("--geometry", default=None, help="GeoJSON file of the region polygon(s)")
    add_filters(se)
    se.add_argument("-k", type=int, default=20, help="results")
    se.add_argument("--rerank", action="store_true", help="BSWFR mutual-rank rerank")
    se.add_argument("--no-rescore", action="store_true", help="skip IA rescoring")
    se.add_argument(
        "--no-group",
        action="store_true",
        help="one hit per tile instead of one per place (overlapping tiles grouped)",
    )
    se.add_argument(
        "--group-overlap",
        type=float,
        default=DISTINCT_PLACES,
        metavar="FRACTION",
        help="shared fraction of the smaller tile that makes two tiles one place (default "
        f"{DISTINCT_PLACES}: distinct places, no two hits share much ground; 0.5: diagonal "
        "neighbours stay places of their own)",
    )
    se.add_argument(
        "--like",
        default=None,
        metavar="TILE_ID|POLYGON.geojson",
        help="more like this: an indexed tile (a hit's tile id) or the tiles under a polygon",
    )
    se.add_argument(
        "--relevant",
        default=None,
        metavar="TILE_IDS",
        help="comma-separated tiles marked relevant: the query moves toward them",
    )
    se.add_argument(
        "--not-relevant",
        default=None,
        metavar="TILE_IDS",
        help="comma-separated tiles marked not relevant: never returned, the query moves away",
    )
    se.add_argument(
        "--refine-method",
        choices=["rocchio", "linear"],
        default="rocchio",
        help="how marks move the query (default rocchio; see docs/benchmarks.md)",
    )
    se.add_argument(
        "--no-transcript",
        action="store_true",
        help="skip the transcript of a spoken query (~50 ms) when the text route is off "
        "(with it on, what was heard is the text route's query and is always printed)",
    )
    se.add_argument(
        "--text-weight",
        type=float,
        default=None,
        help="weight of the text route (the transcript or typed text, fused with the audio "
        "route; default: the checkpoint's; 0: the audio route alone)",
    )
    se.add_argument(
        "--hubness",
        type=float,
        default=None,
        help="weight of each tile's hubness (its closeness to every kind of query) taken "
        "off its score (CSLS: 0.5; default 0, off)",
    )
    se.add_argument(
        "--feedback",
        type=float,
        default=None,
        help="weight of the first places' look added to every candidate's score (scenes like "
        "the best matches rise; default 0.4; 0: off)",
    )
    se.add_argument("--out", default=None, help="write hits (.geojson, .gpkg, .parquet)")
    se.add_argument("--map", default=None, help="write an HTML map of the hits")
    se.set_defaults(func=_cmd_search)

    sp = sub.add_parser("same-place", help="a hit's place on other dates (one tile each)")
    sp.add_argument("tile_id", help="the hit's tile id")
    add_index_args(sp)
    sp.add_argument(
        "--min-overlap",
        type=float,
        default=0.5,
        help="shared fraction of the smaller footprint that makes two tiles one place",
    )
    add_filters(sp, "2015-01-01/..")
    sp.add_argument("--out", default=None, help="write the rows (.geojson, .gpkg, .parquet)")
    sp.set_defaults(func=_cmd_same_place)


def _cmd_search(args: argparse.Namespace) -> int:
    from rsia_geo.pipeline import search
    from rsia_geo.results import HIT_FORMATS, check_output_path

    # outputs are checked before the search, so a typo costs nothing
    if args.out:
        check_output_path(args.out, HIT_FORMATS)
    if args.map:
        check_output_path(args.map, (".html", ".htm"))
    given = [a for a in (args.query, args.text, args.like) if a is not None]
    if len(given) > 1 or (not given and not args.relevant):
        raise InvalidArgumentError(
            "give one query: an audio file, --text 'what to look for', or --like TILE_ID "
            "(or --relevant TILE_IDS), e.g. rsia-geo search query.wav --location my_index"
        )
    region_geom = read_geometry(args.geometry) if args.geometry else None
    like = args.like
    if like is not None and like.lower().endswith((".geojson", ".json")):
        like = read_geometry(like)  # a polygon: the tiles under it are the example
    with index_from_args(args) as idx:
        hits = search(
            args.query,
            idx,
            args.checkpoint,
            text=args.text,
            example=like,
            relevant=args.relevant,
            not_relevant=args.not_relevant,
            refine_method=args.refine_method,
            bbox=args.bbox,
            geometry=region_geom,
            datetime=args.datetime,
            platform=args.platform,
            k=args.k,
            rerank=args.rerank,
            rescore=not args.no_rescore,
            group=not args.no_group,
            group_overlap=args.group_overlap,
            transcribe=not args.no_transcript,
            text_weight=args.text_weight,
            hubness=args.hubness,
            feedback=args.feedback,
        )
    _print_query(hits.attrs.get("query", {}))
    _print_hits(hits)
    if args.out:
        from rsia_geo.results import write_hits

        print(f"wrote {write_hits(hits, args.out)}")
    if args.map:
        from rsia_geo.results import write_map

        write_map(hits, args.map, bbox=args.bbox, geometry=region_geom)
        print(f"map: {args.map}")
    return 0


def _sureness(q: dict[str, Any]) -> str:
    """How sure the recogniser was of a spoken query: `` (confidence 0.38, heard twice; or "...")``.

    When it was unsure, the likeliest other transcript it heard is named too.
    """
    if q.get("heard_confidence") is None:
        return ""
    twice = ", heard twice" if q.get("heard_beam", 1) > 1 else ""
    from rsia_geo.results import also_heard

    other = also_heard(q)
    maybe = f'; or "{other}"' if other else ""
    return f" (confidence {q['heard_confidence']:.2f}{twice}{maybe})"


def _print_query(q: dict[str, Any]) -> None:
    """What was searched for: what was heard or typed, the example, the marks."""
    if "heard" in q:
        print(
            f'heard: "{q["heard"]}"{_sureness(q)}'
            if q["heard"] is not None
            else f"heard: (no speech recogniser: {q.get('heard_unavailable')})"
        )
    if q.get("kind") == "typed":
        print(f'typed query "{q["text"]}" spoken by {q["voiced_by"]}')
    if q.get("kind") == "example":
        print(f"more like the {q['example']} " + (q.get("tile_id") or ""))
    if q.get("relevant") or q.get("not_relevant"):
        print(
            f"refined ({q['refine_method']}) with {q['relevant']} relevant and "
            f"{q['not_relevant']} not relevant tiles"
        )


def _print_hits(hits: Any) -> None:
    """One line per hit, then the hits by acquisition date and platform."""
    t = hits.attrs.get("timings", {})
    print(
        f"{len(hits)} hits ({hits.attrs.get('candidates')} candidates; "
        + ", ".join(f"{k} {v:.0f}" for k, v in t.items())
        + ")"
    )
    if hits.attrs.get("empty"):
        print(f"why: {hits.attrs['empty']}")
    for _, h in hits.iterrows():
        c = h.geometry.centroid
        print(
            f"{int(h['rank']):3d}  score {h['score']:.4f}  {h['item_id']}  L{h['level']} "
            f"window=({h['window']})  centre=({c.x:.5f}, {c.y:.5f})  "
            f"tiles agreeing {int(h['group_size'])}  tile {h['tile_id']}"
        )
    if len(hits):
        from rsia_geo.similar import acquisitions

        print("by acquisition:")
        for _, a in acquisitions(hits).iterrows():
            print(
                f"  {a['date']}  {a['platform']}: {a['hits']} hits, best #{a['best_rank']} "
                f"({a['best_score']:.4f})  {a['items']}"
            )


def _cmd_same_place(args: argparse.Namespace) -> int:
    from rsia_geo.results import HIT_FORMATS, check_output_path, write_hits
    from rsia_geo.similar import same_place

    if args.out:
        check_output_path(args.out, HIT_FORMATS)
    with index_from_args(args) as idx:
        rows = same_place(
            args.tile_id,
            idx,
            min_overlap=args.min_overlap,
            datetime=args.datetime,
            platform=args.platform,
        )
    print(f"{len(rows)} other acquisitions of tile {args.tile_id}'s place")
    for _, r in rows.iterrows():
        print(
            f"  {r['datetime']}  {r['platform'] or '-'}  {r['item_id']}  L{r['level']}  "
            f"overlap {r['overlap']:.2f}  similarity {r['similarity']:.3f}  tile {r['tile_id']}"
        )
    if args.out:
        print(f"wrote {write_hits(rows, args.out)}")
    return 0
