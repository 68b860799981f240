"""Inclusivity and sweeps: a live coefficient table under a heatmap-filter slider, sweeps, charts, saving."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FileEdit, FloatSlider, FloatSpinBox, PushButton
from qtpy.QtCore import QObject, QTimer, Signal

from ..analysis.sweep import sweep
from ..io.atomic import replacing
from ..lrp.filters import Filter, describe_filter, heatmap_filter
from ..metrics import input_mask, layer_mean_power
from ..metrics.plots import inclusivity_figure, perturbation_figure, signal_figure
from ._base import DockPanel, ThemedCanvas
from ._layers import DEFAULT_PERCENTILE, case_key_on_screen, show_relevance
from ._session import ShownView, shown_coefficients
from ._tables import COEFFICIENTS, NumberTable, format_spread

THROTTLE_MS = 30
#: the slider's table is computed this long after the layer is updated, once the canvas has drawn it
TABLE_AFTER_MS = 40
#: the live table's columns (the measures' names; the table shows their symbols)
COEFFICIENT_COLUMNS = ("input_inclusivity", "groundtruth_inclusivity", "mu", "mean_power")
#: where results go by default: a folder in the user's home, never the process's working directory
DEFAULT_OUTPUT = Path.home() / "napari-lrp-output"
def save_as_shown(exp, heatmap_filter, output, tau_r: float, tau_x: float) -> tuple[Path, list[Path]]:
    """A run as the dock shows it (``heatmap_filter`` in place of its 'input' filter) saved into its own folder
    ``<output>/<case>/<run name>`` (the name ends in a digest of every setting).

    Parameters
    ----------
    exp : Explanation
        The run.
    heatmap_filter : Filter or None
        The dock's heatmap filter (None: the run's own filters).
    output : str or Path
        The output folder.
    tau_r, tau_x : float
        The inclusivities' thresholds for the saved coefficients.

    Returns
    -------
    tuple
        (the run's folder, the files written).
    """
    if heatmap_filter is not None:
        exp = exp.refilter({**exp.filters, "input": heatmap_filter})
    folder = Path(output).expanduser() / exp.case.name / exp.run_name
    return folder, exp.save(folder, tau_r=tau_r, tau_x=tau_x)


def _write_csv(table, path) -> Path:
    """A table as CSV, atomically (the file replaced whole)."""
    path = Path(path).expanduser()
    with replacing(path) as tmp:
        table.to_csv(tmp, index=False)
    return path


class _TableBridge(QObject):
    ready = Signal(object)


class InclusivityWidget(DockPanel):
    """Live inclusivity table for the current explanation; the heatmap-filter slider acts on the final
    relevance map (the 'input' placement, replacing the run's own input filter), so moving it needs no
    propagation."""

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self._build_view_controls()
        self._build_actions()
        self.add(self.kind, self.alpha, self.percentile, self.tau_r, self.tau_x, self.table, self.mp_table,
                 self.sweep_placement, self.sweep_lesions, self.sweep_button, self.faithfulness_button, self.chart,
                 self.csv_path, self.export_button,
                 self.save_dir, self.save_button, self.status)
        self.charts = ThemedCanvas(napari_viewer, figsize=(5, 6), min_height=340,
                                   placeholder="Sweep draws the paper's charts here")
        self.figure, self.canvas = self.charts.figure, self.charts.canvas
        self.add_native(self.canvas)
        self.set_status("run the Relevance widget first")
        self.coefficients = None  # the DataFrame shown in the table
        self.sweep_table = None
        self.updates = 0  # how many times the table was recomputed
        self._mask_cache: tuple | None = None  # (case, modalities, tau_x, its image mask)
        self._busy_controls = [self.sweep_button, self.faithfulness_button, self.save_button, self.export_button]
        self.curves = None  # the last faithfulness curves
        self.last_saved: Path | None = None  # the run folder the last Save wrote
        self._connect()
        self.session.view = self.view()  # the next Run computes the heatmap as shown in its worker

    def _build_view_controls(self) -> None:
        """The heatmap filter, colour limit, thresholds and the two tables."""
        self.kind = ComboBox(label="heatmap filter", choices=("clamp", "pass", "amplify", "none"), value="clamp",
                             tooltip="A filter on the shown heatmap (it replaces the run's input filter): clamp "
                                     "limits |relevance| to alpha of its maximum, pass keeps only values up to "
                                     "alpha, amplify doubles values above alpha.")
        self.alpha = FloatSlider(label="alpha", min=0.0, max=1.0, step=0.01, value=1.0,
                                 tooltip="alpha as a fraction of the maximum |relevance|; the table and the "
                                         "layers follow at once.")
        self.percentile = FloatSpinBox(label="colour limit (%)", min=50.0, max=100.0, step=0.1,
                                       value=DEFAULT_PERCENTILE,
                                       tooltip="The colour scale saturates at this percentile of |relevance| "
                                               "(100: the maximum); lower it to see weak relevance, raise it "
                                               "to see the peak's structure.")
        self.tau_r, self.tau_x = (
            FloatSpinBox(label=label, min=0.0, max=1.0, step=0.05, value=value, tooltip=tip) for label, value, tip in (
                ("tau_R", 0.5, "tau_R: a voxel counts as strongly relevant when |R| >= tau_R times the channel's "
                               "maximum |R|."),
                ("tau_x", 0.1, "tau_x: a voxel counts as image signal when |x| > tau_x times the channel's "
                               "maximum.")))
        self.table = NumberTable("coefficients", "; ".join(f"{symbol}: {meaning}" for symbol, meaning in (
            COEFFICIENTS[c] for c in COEFFICIENT_COLUMNS)))
        self.table.native.setMinimumHeight(250)
        self.mp_table = NumberTable("mean power per layer", "MP: " + COEFFICIENTS["mean_power"][1])
        self.mp_table.native.setMinimumHeight(220)

    def _build_actions(self) -> None:
        """Sweep, chart choice, Faithfulness, Export and Save."""
        self.sweep_placement = ComboBox(label="sweep filter at", choices=("input", "blocks"), value="input",
                                        tooltip="input: every filter of the authors' grids on the heatmap; blocks: "
                                                "after every block of the network (one backward pass each).")
        self.sweep_button = PushButton(text="Sweep", tooltip="Run the authors' filter grids and draw the paper's "
                                                             "charts (Fig. 4 and 5).")
        self.sweep_lesions = CheckBox(label="per lesion", value=False,
                                      tooltip="Also sweep every lesion of the prediction and of the ground truth "
                                              "explained alone (lesion-wise rows in the exported table: target, "
                                              "size, detected / missed); the charts show the run's own target.")
        self.chart = ComboBox(label="chart", choices=("Fig. 4: inclusivity", "Fig. 5: signal distribution",
                                                      "faithfulness"),
                              value="Fig. 4: inclusivity",
                              tooltip="Fig. 4: mean input and ground-truth inclusivity per filter setting; Fig. 5: "
                                      "the signal distribution mu per setting and modality; faithfulness: the "
                                      "last region perturbation curves.")
        self.faithfulness_button = PushButton(
            text="Faithfulness", tooltip="Region perturbation of the heatmap as shown: blocks of the input flipped "
                                         "most relevant first (MoRF), least relevant first (LeRF) and in random "
                                         "order, the target's score after each step. A faithful map drops the "
                                         "score fast under MoRF (low AUC) and slowly under LeRF (high AUC).")
        self.csv_path = FileEdit(label="table CSV", mode="w", filter="*.csv",
                                 value=str(DEFAULT_OUTPUT / "sweep.csv"),
                                 tooltip="Where Export CSV writes the sweep table (or, before a sweep, the "
                                         "coefficient table).")
        self.export_button = PushButton(text="Export CSV", tooltip="Write the sweep table (before a sweep: the "
                                                                      "coefficient table) to the CSV file above.")
        self.save_dir = FileEdit(label="output folder", mode="d", value=str(DEFAULT_OUTPUT),
                                 tooltip="Save writes each run into its own folder here, <case>/<run>/ (the run: "
                                         "rules or method, target, class and a digest of every setting): relevance "
                                         "NIfTIs, prediction, coefficients and settings as one unit; saving the "
                                         "same run again replaces that folder, another run gets its own.")
        self.save_button = PushButton(text="Save relevance NIfTI + settings",
                                      tooltip="Write the relevance maps as shown (per modality and their sum), the "
                                              "prediction, the coefficients and the settings JSON that reproduces "
                                              "the run; the folder is replaced as one unit.")

    def _connect(self) -> None:
        """The throttled update, the buttons, and the session's explanation and case."""
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(THROTTLE_MS)
        self._timer.timeout.connect(lambda: self.update_now(background=True))
        self._table_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="napari-lrp table")
        self._table_timer = QTimer(self)  # the dock's own: it goes with the dock
        self._table_timer.setSingleShot(True)
        self._table_timer.setInterval(TABLE_AFTER_MS)
        self._table_timer.timeout.connect(self._table_in_thread)
        self._table_job = None
        self._table_token = None
        self._table_bridge = _TableBridge()
        self._table_bridge.ready.connect(self._table_ready)
        for w in (self.kind, self.alpha, self.tau_r, self.tau_x, self.percentile):
            w.changed.connect(lambda *_: self._timer.start())
        self.sweep_button.changed.connect(self.run_sweep)
        self.faithfulness_button.changed.connect(self.run_faithfulness)
        self.chart.changed.connect(lambda *_: self.draw_chart())
        self.export_button.changed.connect(lambda: self._guarded(self.export_in_background, str(self.csv_path.value)))
        self.save_button.changed.connect(lambda: self._guarded(self.save_in_background, str(self.save_dir.value)))
        self.session.explanation_changed.connect(self._on_explanation)
        self.session.case_changed.connect(self._on_case)
        if self.session.explanation is not None:
            self._on_explanation(self.session.explanation)

    def _guarded(self, fn, *args):
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - shown in the status and a notification
            self.show_error(exc)
            return None

    def current(self, action: str):
        """The latest run when it explains the case on screen.

        Parameters
        ----------
        action : str
            What the caller is about to do (named in the refusal).

        Returns
        -------
        Explanation

        Raises
        ------
        RuntimeError
            After a case switch: nothing acts on the old case.
        """
        exp = self.session.current_explanation(case_key_on_screen(self._viewer))
        if exp is None:
            self.session.run_requested.emit(action)
            raise RuntimeError(f"nothing to {action} yet: the case on screen has no run; Run the Relevance widget")
        return exp

    def current_filter(self) -> Filter | None:
        """The heatmap filter the controls describe.

        Returns
        -------
        Filter or None
        """
        return heatmap_filter(self.kind.value, float(self.alpha.value))

    def filtered_relevance(self) -> np.ndarray:
        """The run's relevance with the heatmap filter in place of the run's own 'input' filter.

        Returns
        -------
        numpy.ndarray
            (C, Z, Y, X).
        """
        return self.session.explanation.heatmap(self.current_filter())

    def _on_case(self, _case):
        """Another case is on screen: its coefficients are not these; clear until it is explained."""
        self.coefficients = None
        self.sweep_table = None
        self.curves = None
        self.table.clear_rows()
        self.mp_table.clear_rows()
        self.charts.clear()
        self.set_status("a new case is on screen: run the Relevance widget")

    def _on_explanation(self, exp):
        mp = self.session.layer_power if self.session.layer_power is not None else (
            layer_mean_power(exp) if exp.kept else {})
        self.mp_table.show([[v] for v in mp.values()], list(mp), ["mean_power"])
        self.sweep_table = None
        self.charts.clear()
        self.update_now()

    def view(self) -> ShownView:
        """How the dock shows and scores the relevance (also the session's, read by the next Run's worker).

        Returns
        -------
        ShownView
        """
        return ShownView(self.current_filter(), self.tau_r.value, self.tau_x.value, self.percentile.value)

    def update_now(self, background: bool = False):
        """Apply the heatmap filter, update the relevance layers in place and recompute the table (a run's first
        showing uses what its worker computed under the same view).

        Parameters
        ----------
        background : bool
            Compute the table in a thread and show it when done (the slider: the layer is drawn at once); a
            later move supersedes a table still being computed.
        """
        view = self.session.view = self.view()  # also what the next Run's worker computes
        exp = self._guarded(self.current, "score")
        if exp is None:
            return
        shown = self.session.shown
        table = None
        if shown is not None and shown.explanation is exp and shown.view == view:
            R, table = shown.relevance, shown.table
        else:
            R = exp.heatmap(view.filter)
        show_relevance(self._viewer, R, exp.modalities, exp.case, lazy=True, percentile=view.percentile)
        self.session.relevance_shown = True
        self.updates += 1
        self._table_token = token = object()
        if table is not None:
            self._show_table(exp, view, table)
        elif background:  # after the canvas has drawn the layer: the table's thread would hold up the draw
            self._table_job = (token, exp, R, view)
            self._table_timer.start()
        else:
            self._show_table(exp, view, self._coefficients(exp, R, view))

    def _table_in_thread(self) -> None:
        token, exp, R, view = self._table_job
        self._table_job = None
        if token is not self._table_token:
            return  # a later move superseded it before it started
        job = self._table_pool.submit(self._coefficients, exp, R, view)
        job.add_done_callback(lambda done: self._table_bridge.ready.emit((token, exp, view, done)))

    def _coefficients(self, exp, R, view: ShownView):
        cached = self._mask_cache  # one tuple, replaced whole: the table's thread and the main thread share it
        # the image mask changes with the case (held, so never mistaken for a new one) and tau_x, not the filter
        if cached is None or cached[0] is not exp.case or cached[1:3] != (tuple(exp.modalities), view.tau_x):
            cached = self._mask_cache = (exp.case, tuple(exp.modalities), view.tau_x,
                                         input_mask(exp.input_image, view.tau_x))
        return shown_coefficients(exp, R, view, image_mask=cached[3])

    def _table_ready(self, item) -> None:
        token, exp, view, done = item
        if token is not self._table_token or exp is not self.session.explanation:
            return  # a later move (or another run, or case) superseded it
        try:
            table = done.result()
        except Exception as exc:  # noqa: BLE001 - shown in the status and a notification
            self.show_error(exc)
            return
        self._show_table(exp, view, table)

    def _show_table(self, exp, view: ShownView, t) -> None:
        cols = list(COEFFICIENT_COLUMNS)
        if "mean_power_sd" not in t:
            data = [list(row) for row in t[cols].values]
        else:  # a sampled run: mean +- sd over the draws of each coefficient
            data = [[format_spread(m, sd) for m, sd in zip(row[:len(cols)], row[len(cols):])]
                    for row in t[cols + [f"{c}_sd" for c in cols]].values]
        self.coefficients = t
        self.table.show(data, list(t.channel), cols)
        self.set_status(f"{exp.case.name}: {describe_filter(view.filter)}")

    def run_sweep(self):
        """Sweep the authors' filter grids on the run (in a worker); the chart shows Fig. 4 or 5."""
        from napari.qt.threading import create_worker

        exp = self._guarded(self.current, "sweep")
        if exp is None:
            return
        placement, tau_r, tau_x = self.sweep_placement.value, self.tau_r.value, self.tau_x.value
        progress = self.progress_callback(RuntimeError)
        worker = create_worker(sweep, exp, placement=placement, tau_r=tau_r, tau_x=tau_x, progress=progress,
                               lesions=self.sweep_lesions.value, _ignore_errors=True)
        self.start(worker, self._swept, busy="sweeping ...")
        self.sweep_worker = worker

    def run_faithfulness(self):
        """MoRF, LeRF and random region perturbation of the heatmap as shown, in a worker; the chart shows it."""
        from napari.qt.threading import create_worker

        exp = self._guarded(self.current, "score")
        if exp is None:
            return
        R = self.filtered_relevance()
        progress = self.progress_callback(RuntimeError)

        def work():
            return list(exp.faithfulness(("morf", "lerf", "random"), relevance=R, progress=progress,
                                         cache={}).values())

        self.start(create_worker(work, _ignore_errors=True), self._faithful, busy="region perturbation ...")

    def _faithful(self, curves):
        if self.session.explanation is None:
            self.set_status("the case on screen changed while scoring; the curves were dropped")
            return
        self.curves = curves
        self.chart.value = "faithfulness"
        self.draw_chart()
        aucs = ", ".join(f"{c.order.upper() if c.order != 'random' else 'random'} AUC {c.auc:.3f}" for c in curves)
        self.set_status(f"faithfulness of the heatmap as shown: {aucs}")

    def _swept(self, table):
        if self.session.explanation is None:  # the case changed while sweeping
            self.set_status("the case on screen changed while sweeping; the sweep was dropped")
            return
        self.sweep_table = table
        self.draw_chart()
        lesions = f", {table.target.nunique() - 1} lesions" if "target" in table else ""
        self.set_status(f"sweep: {table.setting.nunique()} settings{lesions}; Export CSV writes the table")

    def draw_chart(self):
        """Draw the chosen chart (of the last sweep, or the faithfulness curves) into the dock's canvas, in the
        napari theme's colours."""
        if self.chart.value == "faithfulness":
            if self.curves is not None:
                perturbation_figure(self.curves, fig=self.figure)
                self.charts.themed()
            return
        if self.sweep_table is None:
            return
        draw = inclusivity_figure if self.chart.value.startswith("Fig. 4") else signal_figure
        table = self.sweep_table
        draw(table[table.target == "run"] if "target" in table else table, fig=self.figure)
        self.charts.themed()

    def export_csv(self, path: str) -> Path:
        """Write the sweep table (or the current coefficients) as CSV, atomically.

        Parameters
        ----------
        path : str
            The CSV file.

        Returns
        -------
        Path
        """
        table, what = self._to_export()
        path = _write_csv(table, path)
        self.set_status(f"wrote the {what} to {path.resolve()}")
        return path

    def _to_export(self):
        self.current("export")
        table = self.sweep_table if self.sweep_table is not None else self.coefficients
        if table is None:
            raise RuntimeError("nothing to export yet: run the Relevance widget first")
        return table, "sweep table" if self.sweep_table is not None else "coefficient table"

    def export_in_background(self, path: str) -> None:
        """:meth:`export_csv` in a worker, as Save (a lesion-wise sweep's table can be long).

        Parameters
        ----------
        path : str
            As for :meth:`export_csv`.

        Returns
        -------
        None
            The worker writes the file; the status names it when it is done.
        """
        from napari.qt.threading import create_worker

        table, what = self._to_export()
        self.start(create_worker(_write_csv, table, path, _ignore_errors=True),
                   lambda written: self.set_status(f"wrote the {what} to {written.resolve()}"),
                   busy=f"writing the {what} ...")

    def _save_args(self, output: str) -> tuple:
        """(the run on screen, the heatmap filter, the output folder, tau_R, tau_x): what :func:`save_as_shown`
        takes, read on the main thread."""
        return self.current("save"), self.current_filter(), output, self.tau_r.value, self.tau_x.value

    def _saved(self, case_name: str, result) -> list[Path]:
        folder, written = result
        self.last_saved = folder
        self.set_status(f"wrote {len(written)} files of {case_name} to {folder.resolve()}")
        return written

    def save(self, output: str) -> list[Path]:
        """Every output of the run as shown (``Explanation.save``), the heatmap filter in place of the run's own,
        into the run's own folder ``<output>/<case>/<run name>`` (replaced as one unit; other runs' folders
        untouched).

        Relevance NIfTIs (per modality and sum) and prediction on the input grid, the coefficients at the dock's
        thresholds and the settings JSON.

        Parameters
        ----------
        output : str
            The output folder.

        Returns
        -------
        list of Path
        """
        args = self._save_args(output)
        return self._saved(args[0].case.name, save_as_shown(*args))

    def save_in_background(self, output: str) -> None:
        """:meth:`save` in a worker (the window stays responsive); the status says what was written.

        Parameters
        ----------
        output : str
            The output folder.

        Returns
        -------
        None
            The files are written by a worker; ``last_saved`` and the status name the folder when it is done.
        """
        from napari.qt.threading import create_worker

        args = self._save_args(output)
        name = args[0].case.name
        self.start(create_worker(save_as_shown, *args, _ignore_errors=True), lambda result: self._saved(name, result),
                   busy=f"saving {name} ...")
