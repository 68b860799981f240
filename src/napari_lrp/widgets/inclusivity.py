"""Inclusivity and sweeps: a live coefficient table under a heatmap-filter slider, sweeps, charts, saving."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    FloatSlider,
    FloatSpinBox,
    Label,
    PushButton,
    Table,
)
from qtpy.QtCore import QTimer

from ..io.atomic import replacing
from ..lrp.filters import Filter, make_filter
from ..metrics import input_mask, layer_mean_power, measure
from ..metrics.plots import inclusivity_figure, signal_figure
from ..sweep import sweep
from ._layers import show_relevance
from ._session import session_for

THROTTLE_MS = 30


def heatmap_filter(kind: str, alpha: float) -> Filter | None:
    """The slider's filter on the final heatmap: clamp(0, alpha), pass(0, alpha), amplify(alpha, 2) or none.
    It replaces the run's own 'input' filter (see :func:`napari_lrp.lrp.filters.heatmap`)."""
    if kind == "amplify":
        return make_filter(kind, alpha, 2.0)
    return make_filter(kind, 0.0, alpha)


class InclusivityWidget(Container):
    """Live inclusivity table for the current explanation; the heatmap-filter slider acts on the final
    relevance map (the 'input' placement), so moving it needs no propagation."""

    def __init__(self, napari_viewer):
        self._viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.kind = ComboBox(label="heatmap filter", choices=("clamp", "pass", "amplify", "none"), value="clamp")
        self.alpha = FloatSlider(label="alpha", min=0.0, max=1.0, step=0.01, value=1.0)
        self.tau_r = FloatSpinBox(label="tau_R", min=0.0, max=1.0, step=0.05, value=0.5)
        self.tau_x = FloatSpinBox(label="tau_x", min=0.0, max=1.0, step=0.05, value=0.1)
        self.table = Table(value={"data": [], "index": [], "columns": []}, label="coefficients")
        self.mp_table = Table(value={"data": [], "index": [], "columns": []}, label="mean power per layer")
        self.sweep_placement = ComboBox(label="sweep filter at", choices=("input", "blocks"), value="input")
        self.sweep_button = PushButton(text="Sweep")
        self.chart = ComboBox(label="chart", choices=("Fig. 4: inclusivity", "Fig. 5: signal distribution"),
                              value="Fig. 4: inclusivity")
        self.csv_path = FileEdit(label="table CSV", mode="w", filter="*.csv", value="coefficients.csv")
        self.export_button = PushButton(text="Export CSV")
        self.save_dir = FileEdit(label="save folder", mode="d", value="napari-lrp-output")
        self.save_button = PushButton(text="Save relevance NIfTI + settings")
        self.status = Label(value="run the Relevance widget first")
        super().__init__(widgets=[self.kind, self.alpha, self.tau_r, self.tau_x, self.table, self.mp_table,
                                  self.sweep_placement, self.sweep_button, self.chart, self.csv_path, self.export_button,
                                  self.save_dir, self.save_button, self.status])
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(5, 6))
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(300)
        self.native.layout().addWidget(self.canvas)
        self.coefficients = None  # the DataFrame shown in the table
        self.sweep_table = None
        self.updates = 0  # how many times the table was recomputed
        self._mask_key, self._mask = None, None
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(THROTTLE_MS)
        self._timer.timeout.connect(self.update_now)
        for w in (self.kind, self.alpha, self.tau_r, self.tau_x):
            w.changed.connect(lambda *_: self._timer.start())
        self.sweep_button.changed.connect(self.run_sweep)
        self.chart.changed.connect(lambda *_: self.draw_chart())
        self.export_button.changed.connect(lambda: self.export_csv(str(self.csv_path.value)))
        self.save_button.changed.connect(lambda: self.save(str(self.save_dir.value)))
        self.session.explanation_changed.connect(self._on_explanation)
        if self.session.explanation is not None:
            self._on_explanation(self.session.explanation)

    def current_filter(self) -> Filter | None:
        return heatmap_filter(self.kind.value, float(self.alpha.value))

    def filtered_relevance(self) -> np.ndarray:
        """The run's relevance with the heatmap filter in place of the run's own 'input' filter."""
        return self.session.explanation.heatmap(self.current_filter())

    def _on_explanation(self, exp):
        mp = layer_mean_power(exp) if exp.kept else {}
        self.mp_table.value = {"data": [[round(v, 4)] for v in mp.values()], "index": list(mp),
                               "columns": ["mean power"]}
        self.update_now()

    def update_now(self):
        """Apply the heatmap filter, update the relevance layers in place and recompute the table."""
        exp = self.session.explanation
        if exp is None:
            return
        R = self.filtered_relevance()
        show_relevance(self._viewer, R, exp.modalities, exp.case, lazy=True)
        self.updates += 1
        key = (exp.case, tuple(exp.modalities), self.tau_x.value)
        if self._mask_key is None or self._mask_key[0] is not exp.case or self._mask_key[1:] != key[1:]:  # the image mask changes with the case and tau_x, not with the filter
            self._mask_key, self._mask = key, input_mask(exp.input_image, self.tau_x.value)
        t = measure(R, exp.input_image, exp.case.ground_truth, exp.modalities, self.tau_r.value, self.tau_x.value,
                    image_mask=self._mask)
        self.coefficients = t
        cols = ["input_inclusivity", "groundtruth_inclusivity", "mu", "mean_power"]
        data = [["n/a" if not np.isfinite(v) else round(float(v), 4) for v in row] for row in t[cols].values]
        self.table.value = {"data": data, "index": list(t.channel), "columns": ["input D", "GT D", "mu", "MP"]}
        f = self.current_filter()
        self.status.value = f"heatmap filter: {f!r}" if f is not None else "no heatmap filter"

    def run_sweep(self):
        from napari.qt.threading import create_worker

        exp = self.session.explanation
        if exp is None:
            return
        placement, tau_r, tau_x = self.sweep_placement.value, self.tau_r.value, self.tau_x.value
        worker = create_worker(sweep, exp, placement=placement, tau_r=tau_r, tau_x=tau_x,
                               _progress={"desc": "sweep"}, _ignore_errors=True)
        worker.returned.connect(self._swept)
        worker.errored.connect(lambda e: self._error(e))
        self.sweep_button.enabled = False
        worker.finished.connect(lambda: setattr(self.sweep_button, "enabled", True))
        self.status.value = "sweeping ..."
        worker.start()
        self.sweep_worker = worker

    def _swept(self, table):
        self.sweep_table = table
        self.draw_chart()
        self.status.value = f"sweep: {table.setting.nunique()} settings"

    def draw_chart(self):
        """Draw the chosen chart of the last sweep into the dock's canvas, in the napari theme's colours."""
        if self.sweep_table is None:
            return
        draw = inclusivity_figure if self.chart.value.startswith("Fig. 4") else signal_figure
        draw(self.sweep_table, fig=self.figure)
        self._theme_figure()
        self.canvas.draw_idle()

    def _theme_figure(self):
        try:
            from napari.utils.theme import get_theme

            theme = get_theme(self._viewer.theme)
            bg, fg = theme.canvas.as_hex(), theme.text.as_hex()
        except Exception:  # noqa: BLE001 - theming is cosmetic
            return
        self.figure.set_facecolor(bg)
        for ax in self.figure.axes:
            ax.set_facecolor(bg)
            ax.tick_params(colors=fg)
            ax.yaxis.label.set_color(fg)
            ax.xaxis.label.set_color(fg)
            for spine in ax.spines.values():
                spine.set_color(fg)

    def export_csv(self, path: str) -> Path:
        """Write the sweep table (or the current coefficients) as CSV, atomically."""
        table = self.sweep_table if self.sweep_table is not None else self.coefficients
        if table is None:
            raise RuntimeError("nothing to export yet: run the Relevance widget first")
        path = Path(path)
        with replacing(path) as tmp:
            table.to_csv(tmp, index=False)
        self.status.value = f"wrote {path}"
        return path

    def save(self, folder: str) -> list[Path]:
        """Every output of the run as shown (``Explanation.save``): relevance NIfTIs (per modality and sum)
        and prediction on the input grid, the coefficients at the widget's thresholds and the settings JSON.

        The heatmap filter replaces the run's 'input' filter (as on screen), so the JSON reproduces what is shown.
        """
        exp = self.session.explanation
        if exp is None:
            raise RuntimeError("nothing to save yet: run the Relevance widget first")
        f = self.current_filter()
        if f is not None:
            exp = exp.refilter({**exp.filters, "input": f})
        written = exp.save(folder, tau_r=self.tau_r.value, tau_x=self.tau_x.value)
        self.status.value = f"wrote {len(written)} files to {folder}"
        return written

    def _error(self, exc):
        from napari.utils.notifications import show_error

        self.status.value = f"error: {exc}"
        show_error(f"napari-lrp: {exc}")
