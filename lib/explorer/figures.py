"""The explorer's two plots as PNG frames that cost milliseconds, not a full matplotlib draw.

The figures are :mod:`lib.pruning.analysis`' (``plot_layer_sparsity``, ``plot_mask_iou``), drawn
once without their data; each new frame restores that background and draws only the bars or
lines over it (matplotlib's blitting), then encodes the pixels. With one tick label per layer
a full draw of the reference-width network's plot takes most of a second; a frame does not.
"""
from __future__ import annotations

import io
import warnings
from typing import Mapping, Sequence

import numpy as np
from matplotlib.artist import Artist
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from lib.pruning.analysis import plot_layer_sparsity, plot_mask_iou


class LiveFigure:
    """``figure`` drawn once without ``artists``; :meth:`png` redraws only those, in order
    (so a legend listed last stays on top of the data)."""

    def __init__(self, figure: Figure, artists: Sequence[Artist]):
        self.figure, self.artists = figure, list(artists)
        self.canvas = FigureCanvasAgg(figure)
        for artist in self.artists:
            artist.set_animated(True)
        self.canvas.draw()
        self._background = self.canvas.copy_from_bbox(figure.bbox)
        self.width = int(figure.bbox.width)  # pixels

    def png(self) -> bytes:
        self.canvas.restore_region(self._background)
        for artist in self.artists:
            artist.axes.draw_artist(artist)
        pixels = np.asarray(self.canvas.buffer_rgba())
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, format="PNG", compress_level=1)
        return out.getvalue()


class LayerSparsityPlot:
    """Per-layer deployed sparsity (bars) of one network's layers."""

    def __init__(self, layers: Sequence[str], title: str):
        self.layers = list(layers)
        empty = {"layers": {n: {"sparsity": 0.0} for n in self.layers}}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "legend with loc='best' can be slow": drawn once
            figure = plot_layer_sparsity({"deployed": empty}, title=title)
        self._bars = list(figure.axes[0].containers[0])
        self._live = LiveFigure(figure, [*self._bars, figure.axes[0].get_legend()])
        self.width = self._live.width

    def png(self, report: Mapping) -> bytes:
        """A frame for a :func:`lib.masks.sparsity_report`-shaped ``report``."""
        for bar, name in zip(self._bars, self.layers):
            bar.set_height(report["layers"][name]["sparsity"])
        return self._live.png()


class MaskIouPlot:
    """Per-layer IoU of the task masks (one line per pair of tasks) over the shared layers."""

    def __init__(self, pairs: Sequence[str], layers: Sequence[str], title: str):
        self.pairs, self.layers = list(pairs), list(layers)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "legend with loc='best' can be slow": drawn once
            figure = plot_mask_iou({p: {n: 0.0 for n in self.layers} for p in self.pairs},
                                   title=title)
        self._lines = list(figure.axes[0].lines)
        self._live = LiveFigure(figure, [*self._lines, figure.axes[0].get_legend()])
        self.width = self._live.width

    def png(self, iou: Mapping[str, Mapping[str, float]]) -> bytes:
        """A frame for ``{pair: {layer: IoU}}`` (:func:`lib.pruning.pairwise_mask_iou`)."""
        for line, pair in zip(self._lines, self.pairs):
            line.set_ydata([iou[pair][n] for n in self.layers])
        return self._live.png()
