"""The Compare dock (#17 item 5): attribution methods side by side on the case on screen.

One relevance layer per method ('R sum · <method>', the channel sum, with the R layers' colour map and
limit rule) and one table (seconds, inclusivities, MoRF and LeRF AUC, a random row). The model is the one
the Relevance dock loaded; the work runs in a worker with progress and Cancel.
"""

from __future__ import annotations

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, LineEdit, PushButton, Table

from ..compare import compare, split_methods
from ..lrp.engine import Cancelled
from ._base import DockPanel
from ._layers import show_comparison
from .relevance import TARGETS, case_from_layers

DEFAULT_METHODS = "lrp:paper,lrp:epsilon-gamma-box,gradient,gxi,ig:16,gradcam:encoders.3"
COLUMNS = ("seconds", "input_inclusivity", "groundtruth_inclusivity", "morf_auc", "lerf_auc")


class CompareWidget(DockPanel):
    """Run several methods on the case on screen and show them as layers and one table."""

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.methods = LineEdit(label="methods", value=DEFAULT_METHODS,
                                tooltip="Comma-separated: lrp:PRESET, gradient, gxi (gradient x input), ig[:STEPS] "
                                        "(integrated gradients), sg[:SAMPLES] (SmoothGrad), gbp (guided "
                                        "backpropagation, ReLU networks), gradcam:LAYER, occlusion[:CxZxYxX], or "
                                        "NAME:key=value,key=value.")
        self.target = ComboBox(label="target", choices=TARGETS, value=TARGETS[0],
                               tooltip="What every method explains: the predicted region of the class, the "
                                       "ground-truth region or the whole output.")
        self.faithfulness = CheckBox(label="faithfulness (MoRF / LeRF)", value=True,
                                     tooltip="Also score each map by region perturbation (most and least relevant "
                                             "blocks first, and a random order): a few forward passes per method.")
        self.run_button = PushButton(text="Compare", tooltip="Run the methods on the case on screen with the model "
                                                             "the Relevance dock loaded (in the background).")
        self.cancel_button = PushButton(text="Cancel", enabled=False, tooltip="Stop the comparison; the layers stay.")
        self.table = Table(value={"data": [], "index": [], "columns": []}, label="methods")
        self.table.tooltip = ("seconds: run time; input / GT D: input and ground-truth inclusivity (mean over "
                              "channels); MoRF / LeRF AUC: area under the score when the most / least relevant "
                              "blocks are flipped first (lower MoRF, higher LeRF: more faithful)")
        self.table.native.setMinimumHeight(220)
        self.add(self.methods, self.target, self.faithfulness, self.run_button, self.cancel_button, self.table,
                 self.status)
        self._busy_controls = [self.run_button]
        self.results = None
        self.compared = None  # the last table (a DataFrame)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.set_status("load a case and a model in the Relevance dock, then Compare")

    def run(self):
        from napari.qt.threading import create_worker

        model = self.session.model
        case = self.session.case or case_from_layers(self._viewer)
        if model is None or case is None:
            self.set_status("load a case and a model in the Relevance dock first (Load case and model)")
            return
        specs = split_methods(self.methods.value)
        target = {"predicted region": "region", "ground truth": "groundtruth"}.get(self.target.value, "output")
        progress = self.progress_callback(Cancelled)
        faithful = self.faithfulness.value

        def work():
            return compare(model, case, specs, target=target, perturbation=faithful, progress=progress)

        self.start(create_worker(work, _ignore_errors=True), self._done_comparing, busy="comparing ...")

    def _done_comparing(self, result):
        if self._cancel:
            return
        table, results = result
        self.compared, self.results = table, results
        show_comparison(self._viewer, results)
        cols = [c for c in COLUMNS if c in table.columns]
        data = [["" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}" for v in row]
                for row in table[cols].values]
        self.table.value = {"data": data, "index": list(table.method), "columns": cols}
        self.set_status(f"{len(results)} methods on {next(iter(results.values())).case.name}; layers 'R sum · ...'")
