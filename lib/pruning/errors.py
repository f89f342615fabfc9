"""Typed pruning errors, so callers branch on the kind of failure, never on message text.

All are ``ValueError`` subclasses: the CLI reports them as one-line errors (exit code 2).
"""
from __future__ import annotations


class PruningError(ValueError):
    """Base class of every error a pruning method or the shared pipeline raises on bad input."""


class KeepsNoWeightError(PruningError):
    """A keep ratio so small that a ranking would keep no weight at all."""


class UnreachableSparsityError(PruningError):
    """The requested deployed sparsity cannot be met (ties in the scores, zeros among the kept
    weights); ``closest`` is the nearest sparsity reached (percent), ``keep_ratio`` its ratio."""

    def __init__(self, message: str, closest: float | None = None,
                 keep_ratio: float | None = None):
        super().__init__(message)
        self.closest = closest
        self.keep_ratio = keep_ratio
