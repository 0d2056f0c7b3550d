"""Mapping exceptions to codes at the edges (CLI exit codes, HTTP status codes)."""

from __future__ import annotations

__all__ = ["code_for"]


def code_for(exc: BaseException, table: dict[type[BaseException], int], default: int) -> int:
    """The code an edge (CLI, HTTP service) maps an exception to: most specific class wins.

    Args:
        exc: The exception.
        table: Exception class -> code.
        default: Code for exceptions no class in ``table`` matches.

    Returns:
        The code of the first class of ``type(exc).__mro__`` found in ``table``.
    """
    for cls in type(exc).__mro__:
        if cls in table:
            return table[cls]
    return default
