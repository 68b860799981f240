"""The Concepts dock: which channels of a layer carry the evidence for the run's target (concept relevance,
:mod:`napari_lrp.metrics.concepts`), and where each one's evidence lies.

Pick a layer; 'Show channels' draws the top channels by their share of the layer's relevance (positive and
negative parts); clicking a bar draws that channel's conditional heatmap as the layer 'R · concept'; several
channels typed as 3,7,12 give their joint map. 'Measure channels' scores each top channel's conditional map
(D_x, D_GT, μ, MP, as the Inclusivity dock scores a run) in a table sorted by the chosen coefficient: which
channels look at the lesion, which at anatomy; a click on a row shows that map. 'Reference cases' lists, from
a references.csv of ``napari-lrp concepts``, the cohort's cases where the shown channel receives the most
relevance; 'Open reference case' opens the selected one at that location. The run is the Relevance dock's
(the session's); the work runs in a worker, the layer changes on the main thread.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from magicgui.widgets import ComboBox, FileEdit, LineEdit, PushButton, SpinBox

from ..lrp.blocks import block_names
from ._base import DockPanel, ThemedCanvas
from ._layers import case_key_on_screen, show_concept
from ._session import ShownView
from ._tables import NumberTable

#: what the channels' table can be sorted by (column, highest first)
SORT_KEYS = {"D_GT": "groundtruth_inclusivity", "D_x": "input_inclusivity", "share of |R|": "abs_share",
             "μ": "mu", "MP": "mean_power"}
MEASURE_COLUMNS = ("abs_share", "input_inclusivity", "groundtruth_inclusivity", "mu", "mean_power")
REFERENCE_COLUMNS = ("rank", "case", "relevance", "location_z_mm", "location_y_mm", "location_x_mm")


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
        self._build_measures()
        self._build_references()
        self.add(self.layer, self.top, self.show_button, self.channels, self.joint_button, self.status,
                 self.measure_button, self.sort_by, self.measures_table, self.references_path,
                 self.references_button, self.references_table, self.open_reference_button)
        self.chart = ThemedCanvas(napari_viewer, figsize=(5, 3.6), min_height=280,
                                  placeholder="Show channels draws the layer's channels here; click a bar")
        self.add_native(self.chart.canvas)
        self.place_native_after(self.chart.canvas, self.status)  # the chart under the status, the tables below
        self.table = None  # the last channel table (a DataFrame)
        self.shown: tuple | None = None  # (layer, channels) of the map on the canvas
        self.measures: pd.DataFrame | None = None  # the channels' coefficients (a DataFrame), as sorted
        self.references: pd.DataFrame | None = None  # the reference cases listed
        self._busy_controls = [self.show_button, self.joint_button, self.measure_button]
        self.show_button.changed.connect(self.rank)
        self.joint_button.changed.connect(lambda: self.show_channels(self._typed_channels()))
        self.chart.canvas.mpl_connect("pick_event", self._picked)
        self.session.explanation_changed.connect(lambda _e: self.layer.reset_choices())
        self.session.case_changed.connect(self._on_case)
        self.set_status("run the Relevance dock first, then pick a layer")

    def _build_measures(self) -> None:
        self.measure_button = PushButton(text="Measure channels",
                                         tooltip="Score the conditional map of each channel in the chart (the top "
                                                 "channels): input and ground-truth inclusivity, mu and mean power, "
                                                 "at the Inclusivity dock's thresholds; one pass per channel.")
        self.sort_by = ComboBox(label="sort by", choices=list(SORT_KEYS), value="D_GT",
                                tooltip="Sort the channels' table by this coefficient, highest first (D_GT: the "
                                        "channels whose evidence lies on the ground truth come first).")
        self.measures_table = NumberTable("channels' maps", "One row per channel (its number as the row name): the "
                                                            "coefficients of its conditional map; click a row for "
                                                            "the map.")
        self.measures_table.native.setMinimumHeight(180)
        self.sort_by.changed.connect(lambda *_: self._show_measures())
        self.measure_button.changed.connect(self.measure)
        self.measures_table.native.cellClicked.connect(self._measure_clicked)

    def _build_references(self) -> None:
        self.references_path = FileEdit(label="references", mode="r", filter="*.csv", value="",
                                        tooltip="A references.csv written by 'napari-lrp concepts COHORT --layer L "
                                                "...': the cohort's cases where each channel receives the most "
                                                "relevance.")
        self.references_button = PushButton(text="Reference cases",
                                            tooltip="List the reference cases of the shown channel (the last "
                                                    "clicked bar or row) at the chosen layer.")
        self.references_table = NumberTable("reference cases", "The cases where the channel receives the most "
                                                               "relevance, and where (world mm, napari's Z, Y, "
                                                               "X); select one and open it.")
        self.references_table.native.setMinimumHeight(140)
        self.open_reference_button = PushButton(text="Open reference case",
                                                tooltip="Open the selected reference case (replacing the case on "
                                                        "screen) with the slice at the channel's peak.")
        self.references_button.changed.connect(self.list_references)
        self.open_reference_button.changed.connect(self.open_reference)

    def _layer_choices(self, _widget=None):
        exp = getattr(getattr(self, "session", None), "explanation", None)
        if exp is None or exp.method != "lrp" or exp.samples is not None:
            return ["(run first)"]
        names = [n for n, shape in exp.layer_shapes.items() if len(shape) == 5]
        blocks = [n for n in block_names(exp.network) if n in names]
        return blocks + [n for n in names if n not in blocks] or ["(run first)"]

    def _on_case(self, _case):
        self.table = self.shown = self.measures = None
        self.measures_table.clear_rows()
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

    # ---- measures of the channels' maps --------------------------------------------------------------------
    def _top_channels(self) -> list[int]:
        if self.table is None:
            return []
        order = self.table.abs_share.sort_values(ascending=False).index[: self.top.value]
        return [int(c) for c in self.table.loc[order, "channel"]]

    def measure(self):
        """Score the conditional map of each channel in the chart (in a worker); the table follows."""
        from napari.qt.threading import create_worker

        exp = self._current()
        layer = getattr(self, "_layer", None)
        channels = self._top_channels()
        if exp is None or layer is None or not channels:
            self.set_status("Show channels first: the table scores the channels of the chart")
            return
        view = self.session.view or ShownView()
        shares = self.table.set_index("channel").abs_share
        progress = self.progress_callback(RuntimeError)

        def work():
            rows = []
            for i, c in enumerate(channels):
                rows.append(exp.concept_measures(layer, [c], tau_r=view.tau_r, tau_x=view.tau_x))
                progress(i + 1, len(channels))
            table = pd.concat(rows, ignore_index=True)
            table["abs_share"] = [float(shares.loc[c]) for c in table.channel]
            return table

        self.start(create_worker(work, _ignore_errors=True), lambda t: self._measured(exp, layer, t),
                   busy=f"scoring {len(channels)} channels of {layer} ...")

    def _measured(self, exp, layer, table):
        if self.session.explanation is not exp:
            return
        self.measures = table
        self._show_measures()
        best = self.measures.iloc[0]
        self.set_status(f"{layer}: {len(table)} channels scored; by {self.sort_by.value}, channel "
                        f"{int(best.channel)} first; click a row for its map")

    def _show_measures(self) -> None:
        if self.measures is None:
            return
        key = SORT_KEYS[self.sort_by.value]
        self.measures = self.measures.sort_values(key, ascending=False, na_position="last").reset_index(drop=True)
        cols = list(MEASURE_COLUMNS)
        self.measures_table.show(self.measures[cols].values.tolist(), [str(int(c)) for c in self.measures.channel],
                                 cols)

    def _measure_clicked(self, row: int, _column: int) -> None:
        if self.measures is not None and 0 <= row < len(self.measures):
            self.show_channels([int(self.measures.channel.iloc[row])])

    # ---- reference cases across a cohort ----------------------------------------------------------------
    def _shown_channel(self) -> int | None:
        if self.shown is not None:
            return int(self.shown[1][0])
        typed = self._typed_channels()
        return typed[0] if typed else None

    def list_references(self):
        """List the reference cases of the shown channel at the chosen layer from the references table."""
        path = Path(str(self.references_path.value)).expanduser()
        layer = self.shown[0] if self.shown is not None else self.layer.value
        channel = self._shown_channel()
        if channel is None:
            self.set_status("show a channel first (click a bar or a row), then Reference cases")
            return
        try:
            refs = pd.read_csv(path)
        except (OSError, ValueError) as exc:
            self.set_status(f"references {path}: cannot read it ({exc}); write one with 'napari-lrp concepts'")
            return
        missing = [c for c in (*REFERENCE_COLUMNS, "channel", "layer", "case_folder") if c not in refs]
        if missing:
            self.set_status(f"references {path}: no column {', '.join(missing)}: write it again with this version "
                            "of 'napari-lrp concepts'")
            return
        rows = refs[(refs.layer == layer) & (refs.channel == channel)].sort_values("rank").reset_index(drop=True)
        self.references = rows
        self.references_table.show(rows[list(REFERENCE_COLUMNS)].values.tolist(), [str(int(r)) for r in rows["rank"]],
                                   list(REFERENCE_COLUMNS))
        if rows.empty:
            layers = ", ".join(sorted(set(map(str, refs.layer))))
            self.set_status(f"references {path}: none for {layer} channel {channel} (the table has {layers})")
        else:
            self.set_status(f"{layer} channel {channel}: {len(rows)} reference cases; select one and open it")

    def open_reference(self):
        """Open the selected reference case (the first when none is selected) at the channel's peak."""
        if self.references is None or self.references.empty:
            self.set_status("list the reference cases first")
            return
        row = max(self.references_table.native.currentRow(), 0)
        ref = self.references.iloc[row]
        self._viewer.open(str(ref.case_folder), plugin="napari-lrp")
        self._viewer.dims.set_point(0, float(ref.location_z_mm))
        self.set_status(f"opened {ref.case} (reference {int(ref['rank'])} of {ref.layer} channel {int(ref.channel)})"
                        f" at z = {float(ref.location_z_mm):.1f} mm: Run explains it")
