"""Switching a module to eval mode for one call, and back exactly as it was."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Put ``module`` and its submodules in eval mode for the block, then restore each one.

    Only the submodules that were training are switched and switched back, so a serving call on
    a model already in eval mode costs nothing (``Module.train`` walks every submodule, ~10 ms
    per spoken query on the starter model), and a call made during training leaves a frozen
    backbone that the training loop keeps in eval mode (batch-norm statistics) as it was,
    where ``module.train(was)`` would switch it to training.

    Args:
        module: Any torch module.
    """
    training = [m for m in module.modules() if m.training]
    for m in training:
        m.training = False
    try:
        yield
    finally:
        for m in training:
            m.training = True
