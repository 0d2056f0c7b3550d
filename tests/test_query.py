"""Query inputs (``rsia_geo.query``): one parser for every edge, no index layer behind it."""

from __future__ import annotations

import pytest

from rsia_geo.errors import InvalidBBoxError
from rsia_geo.query import make_region, parse_bbox


@pytest.mark.parametrize(
    "text", ["-117.2, 32.6, -117.0, 32.8", "-117.2 32.6 -117.0 32.8", " -117.2,32.6,-117,32.8 "]
)
def test_bbox_text_with_commas_or_spaces(text):
    assert parse_bbox(text) == (-117.2, 32.6, -117.0, 32.8)


def test_bbox_errors_name_the_value_and_the_fix():
    with pytest.raises(InvalidBBoxError, match=r"'1, 2, three' is not four numbers.*minx"):
        parse_bbox("1, 2, three")
    with pytest.raises(InvalidBBoxError):
        parse_bbox("0, 5, 1, 2")  # miny > maxy
    assert parse_bbox((170, -20, -170, -10)) == (170.0, -20.0, -170.0, -10.0)  # across 180


def test_the_query_module_needs_no_index_layer():
    """Its imports (the package's own __init__ aside) name no index, pipeline or model module."""
    import ast
    import inspect

    import rsia_geo.query as q

    names = set()
    for node in ast.walk(ast.parse(inspect.getsource(q))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    ours = {n for n in names if n.startswith("rsia_geo")}
    assert ours <= {"rsia_geo._geo", "rsia_geo._types", "rsia_geo.errors"}, ours


def test_the_index_layer_still_exports_regions():
    from rsia_geo.index import Region
    from rsia_geo.index import make_region as from_index

    assert from_index is make_region and isinstance(make_region(bbox=(0, 0, 1, 1)), Region)
