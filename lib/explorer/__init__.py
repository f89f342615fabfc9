"""The pruning explorer: tasks, method, fusion rule and a sparsity slider on one base model.

    explore(net, criterion, loader, ...)   the ipywidgets view, one call from a notebook
    ExplorerState                          the same logic without widgets (plain unit tests)
    Snapshot                               what one setting of the controls shows
"""
from .state import FUSION_RULES, ExplorerState, Snapshot


def explore(*args, **kwargs):
    """Open the explorer (:class:`lib.explorer.view.ExplorerView`); see its docstring."""
    from .view import explore as _explore
    return _explore(*args, **kwargs)


__all__ = ["FUSION_RULES", "ExplorerState", "Snapshot", "explore"]
