"""Keeping torch's thread count when a CTranslate2 model loads.

Loading a CTranslate2 model sets the OpenMP thread count of the calling thread, and torch reads
the same OpenMP setting (``torch.get_num_threads()``): after the text route's sentence encoder
(one thread per batch) loaded, every later torch stage of that thread (the audio head, IA
rescoring, embedding tiles in a notebook's ``build_index``) ran on one thread, and a Whisper
model loaded after it took that one thread as its own count. The guard restores what torch had.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def keeps_torch_threads() -> Iterator[None]:
    """Restore torch's intra-op thread count after the block (a no-op when torch is not loaded)."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
