"""The Concepts dock: which channels of a layer carry the evidence for the run's target (concept relevance,
:mod:`napari_lrp.metrics.concepts`), and where each one's evidence lies.

Pick a layer; 'Show channels' draws the top channels by their share of the layer's relevance (positive and
negative parts); clicking a bar draws that channel's conditional heatmap as the layer 'R · concept'; several
channels typed as 3,7,12 give their joint map. The run is the Relevance dock's (the session's); the work runs
in a worker, the layer changes on the main thread.
"""

from __future__ import annotations

import numpy as np
from magicgui.widgets import ComboBox, LineEdit, PushButton, SpinBox

from ..lrp.blocks import block_names
from ._base import DockPanel, ThemedCanvas
from ._layers import case_key_on_screen, show_concept


class ConceptsWidget(DockPanel):
    """Channel relevance at a layer as a bar chart; a bar's conditional heatmap on the canvas."""

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.layer = ComboBox(label="layer", choices=self._layer_choices,
                              tooltip="The layer whose channels (concepts) are ranked: blocks first.")
        self.top = SpinBox(label="top", value=16, min=2, max=64,
                           tooltip="How many channels the chart shows (by their share of |relevance|).")
        self.show_button = PushButton(text="Show channels",
                                      tooltip="Rank the layer's channels by their share of the relevance arriving "
                                              "there for the run's target (no new pass for kept layers).")
        self.channels = LineEdit(label="channels", value="",
                                 tooltip="Channels whose joint conditional heatmap to show, e.g. 3,7,12 (a click on "
                                         "a bar shows one).")
        self.joint_button = PushButton(text="Show joint map",
                                       tooltip="The relevance with only these channels passed at the layer, "
                                               "propagated from the layer down, as the layer 'R · concept'.")
        self.add(self.layer, self.top, self.show_button, self.channels, self.joint_button, self.status)
        self.chart = ThemedCanvas(napari_viewer, figsize=(5, 3.6), min_height=280,
                                  placeholder="Show channels draws the layer's channels here; click a bar")
        self.add_native(self.chart.canvas)
        self.table = None  # the last channel table (a DataFrame)
        self.shown: tuple | None = None  # (layer, channels) of the map on the canvas
        self._busy_controls = [self.show_button, self.joint_button]
        self.show_button.changed.connect(self.rank)
        self.joint_button.changed.connect(lambda: self.show_channels(self._typed_channels()))
        self.chart.canvas.mpl_connect("pick_event", self._picked)
        self.session.explanation_changed.connect(lambda _e: self.layer.reset_choices())
        self.session.case_changed.connect(self._on_case)
        self.set_status("run the Relevance dock first, then pick a layer")

    def _layer_choices(self, _widget=None):
        exp = getattr(getattr(self, "session", None), "explanation", None)
        if exp is None or exp.method != "lrp" or exp.samples is not None:
            return ["(run first)"]
        names = [n for n, shape in exp.layer_shapes.items() if len(shape) == 5]
        blocks = [n for n in block_names(exp.network) if n in names]
        return blocks + [n for n in names if n not in blocks] or ["(run first)"]

    def _on_case(self, _case):
        self.table = self.shown = None
        self.chart.clear()
        self.layer.reset_choices()
        self.set_status("a new case is on screen: run the Relevance dock, then pick a layer")

    def _current(self):
        exp = self.session.current_explanation(case_key_on_screen(self._viewer))
        if exp is None or exp.method != "lrp" or exp.samples is not None:
            if exp is None:
                self.session.run_requested.emit("rank concepts")
            self.set_status("no LRP run of the case on screen: Run in the Relevance dock (concepts need an LRP "
                            "run without Monte Carlo draws)")
            return None
        return exp

    def _typed_channels(self) -> list[int]:
        text = self.channels.value.replace(" ", "")
        try:
            return [int(v) for v in text.split(",") if v]
        except ValueError:
            self.set_status(f"channels {self.channels.value!r}: give channel numbers such as 3,7,12")
            return []

    def rank(self):
        """Rank the chosen layer's channels (in a worker) and draw the chart."""
        from napari.qt.threading import create_worker

        exp = self._current()
        layer = self.layer.value
        if exp is None or layer not in exp.layer_shapes:
            return
        progress = self.progress_callback(RuntimeError)
        self.start(create_worker(exp.concepts, layer, progress, _ignore_errors=True),
                   lambda table: self._ranked(exp, layer, table), busy=f"ranking the channels of {layer} ...")

    def _ranked(self, exp, layer, table):
        if self.session.explanation is not exp:
            return
        self.table, self._layer = table, layer
        self.draw(table, layer)
        best = table.loc[table.abs_share.idxmax()]
        self.set_status(f"{exp.case.name}, {layer}: {len(table)} channels; channel {int(best.channel)} carries "
                        f"{best.abs_share:.1%} of |R|; click a bar for its map")

    def draw(self, table, layer):
        """Bars of the top channels by share of |R|: the positive part up, the negative part down.

        Parameters
        ----------
        table : pandas.DataFrame
            ``Explanation.concepts`` of the layer.
        layer : str
            The layer (in the chart's title).
        """
        fig = self.chart.figure
        fig.clear()
        bg, fg = self.chart.colours()
        fig.set_facecolor(bg)
        ax = fig.add_subplot(111)
        ax.set_facecolor(bg)
        top = table.reindex(table.abs_share.sort_values(ascending=False).index[: self.top.value])
        total = float(np.abs(table[["positive", "negative"]]).to_numpy().sum()) or 1.0
        x = np.arange(len(top))
        pos = ax.bar(x, top.positive / total, color="#d62728", picker=True, label="positive")
        neg = ax.bar(x, top.negative / total, color="#1f77b4", picker=True, label="negative")
        for bars in (pos, neg):
            for bar, c in zip(bars, top.channel):
                bar.channel = int(c)
        ax.set_xticks(x, [str(int(c)) for c in top.channel], color=fg, fontsize=7)
        ax.tick_params(colors=fg, labelsize=7)
        ax.axhline(0, color=fg, linewidth=0.5)
        ax.set_xlabel(f"channel of {layer}", color=fg, fontsize=8)
        ax.set_ylabel("share of |R| (signed parts)", color=fg, fontsize=8)
        ax.legend(fontsize=7, labelcolor=fg, facecolor=bg, edgecolor=fg)
        fig.tight_layout()
        self.chart.canvas.draw_idle()

    def _picked(self, event):
        channel = getattr(event.artist, "channel", None)
        if channel is not None:
            self.show_channels([channel])

    def show_channels(self, channels: list[int]):
        """The conditional heatmap of some channels at the chosen layer (in a worker) as 'R · concept'.

        Parameters
        ----------
        channels : list of int
            The channels passed (their maps summed).
        """
        from napari.qt.threading import create_worker

        exp = self._current()
        layer = getattr(self, "_layer", None) or self.layer.value
        if exp is None or not channels or layer not in exp.layer_shapes:
            return
        progress = self.progress_callback(RuntimeError)
        self.start(create_worker(exp.conditional, layer, list(channels), progress, _ignore_errors=True),
                   lambda rel: self._drawn(exp, layer, channels, rel), busy=f"conditional map of {layer} ...")

    def _drawn(self, exp, layer, channels, relevance):
        if self.session.explanation is not exp:
            return
        what = f"{layer} channel{'s' if len(channels) > 1 else ''} {','.join(map(str, channels))}"
        show_concept(self._viewer, exp, relevance, what)
        self.shown = (layer, tuple(channels))
        self.set_status(f"{exp.case.name}: relevance through {what} only, as 'R · concept' "
                        f"(sum {float(relevance.sum()):.3g} of the run's {float(exp.relevance.sum()):.3g})")
