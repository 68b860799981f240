"""The Compare dock: attribution methods side by side on the case on screen, and the
LRP gamma search with its contours and the best point one click from being shown.

One relevance layer per method ('R sum · <method>', the channel sum, with the R layers' colour map and
limit rule) and one table (seconds, inclusivities, MoRF and LeRF AUC, a random row). Scorecard scores the
compared methods on every chosen metric family (``napari_lrp.evaluate``): a table (metrics x methods, each
cell's tooltip saying what the metric measures, which direction is better and how it was measured) and the
figure of normalised ranks. The model is the one the Relevance dock loaded; the work runs in a worker with
progress and Cancel.
"""

from __future__ import annotations

from magicgui.widgets import CheckBox, ComboBox, Container, LineEdit, PushButton, SpinBox

from ..analysis.compare import compare, split_methods
from ..analysis.scorecard import FAMILIES, METRICS, evaluate, selected_metrics
from ..analysis.search import lrp_search
from ..layerdata import case_from_layers
from ..lrp.engine import Cancelled
from ..lrp.presets import PRESETS
from ..metrics.plots import plot_search, scorecard_figure
from ._base import DockPanel, ThemedCanvas
from ._layers import case_key_on_screen, show_comparison, show_explanation
from ._session import TARGET_LABELS, case_key
from ._tables import NumberTable

DEFAULT_METHODS = "lrp:paper,gradient,gxi,ig:16,gradcam:encoders.3"


class MethodPicker(Container):
    """One row per method: a check box and the method's option as a field; ``spec()`` is compare's spec text."""

    def __init__(self):
        self.rows = {
            "lrp": (CheckBox(label="LRP", value=True), ComboBox(label="rules", choices=list(PRESETS), value="paper")),
            "gradient": (CheckBox(label="gradient", value=True), None),
            "gxi": (CheckBox(label="gradient x input", value=True), None),
            "ig": (CheckBox(label="integrated gradients", value=True), SpinBox(label="steps", value=16, min=2,
                                                                             max=512)),
            "sg": (CheckBox(label="SmoothGrad", value=False), SpinBox(label="samples", value=8, min=2, max=512)),
            "gbp": (CheckBox(label="guided backprop", value=False), None),
            "gradcam": (CheckBox(label="Grad-CAM", value=True), LineEdit(label="layer", value="encoders.3")),
            "occlusion": (CheckBox(label="occlusion", value=False), LineEdit(label="window CxZxYxX", value="")),
        }
        tips = {"lrp": "LRP with the chosen rules", "gradient": "the input gradient (saliency)",
                "gxi": "gradient x input", "ig": "integrated gradients with this many steps",
                "sg": "SmoothGrad with this many noisy samples", "gbp": "guided backpropagation (ReLU networks)",
                "gradcam": "Grad-CAM at this module of the network", "occlusion": "occlusion with this window "
                                                                                   "(empty: the method's default)"}
        lines = []
        for key, (box, option) in self.rows.items():
            box.tooltip = tips[key]
            widgets = [box] + ([option] if option is not None else [])
            if option is not None:
                option.tooltip = tips[key]
            line = Container(widgets=widgets, layout="horizontal", labels=False)
            line.margins = (0, 0, 0, 0)
            lines.append(line)
        super().__init__(widgets=lines, labels=False, label="pick")
        self.margins = (0, 0, 0, 0)
        self.tooltip = "Tick the methods to compare, each with its option beside it; the specs below follow."

    def spec(self) -> str:
        """The checked methods as compare's spec text.

        Returns
        -------
        str
            Comma-separated specs, e.g. 'lrp:paper,gxi,ig:16'.
        """
        out = []
        for key, (box, option) in self.rows.items():
            if not box.value:
                continue
            value = "" if option is None else str(option.value).strip()
            out.append(f"{key}:{value}" if value else key)
        return ",".join(out)

    def widgets_to_watch(self) -> list:
        """Every check box and option field (connect their ``changed`` to follow the picks).

        Returns
        -------
        list
        """
        return [w for box, option in self.rows.values() for w in (box, option) if w is not None]
class GammaPicker(Container):
    """The gamma grid of the LRP search as check boxes (the common values); ``spec()`` is the grid's text."""

    #: the values offered, and those ticked at first
    VALUES = (0.0, 0.05, 0.1, 0.25, 0.5, 1.0)
    TICKED = (0.0, 0.25, 1.0)

    def __init__(self):
        self.boxes = {g: CheckBox(label=f"{g:g}", value=g in self.TICKED,
                                  tooltip=f"Try gamma = {g:g} for the encoder blocks and, independently, the decoder "
                                          "blocks.") for g in self.VALUES}
        super().__init__(widgets=list(self.boxes.values()), layout="horizontal", labels=False, label="gamma grid")
        self.margins = (0, 0, 0, 0)
        self.tooltip = "Tick the gamma values to search; the grid line below follows (and takes other values)."

    def spec(self) -> str:
        """The ticked values, comma-separated (e.g. '0,0.25,1').

        Returns
        -------
        str
        """
        return ",".join(f"{g:g}" for g, box in self.boxes.items() if box.value)


COLUMNS = ("seconds", "input_inclusivity", "groundtruth_inclusivity", "morf_auc", "lerf_auc")


class CompareWidget(DockPanel):
    """Run several methods on the case on screen and show them as layers and one table."""

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self.picker = MethodPicker()
        self.methods = LineEdit(label="methods", value=DEFAULT_METHODS,
                                tooltip="The picks above as specs (edit for more, e.g. two LRP presets): "
                                        "comma-separated lrp:PRESET, gradient, gxi (gradient x input), ig[:STEPS] "
                                        "(integrated gradients), sg[:SAMPLES] (SmoothGrad), gbp (guided "
                                        "backpropagation, ReLU networks), gradcam:LAYER, occlusion[:CxZxYxX], or "
                                        "NAME:key=value,key=value.")
        for w in self.picker.widgets_to_watch():
            w.changed.connect(lambda *_: setattr(self.methods, "value", self.picker.spec()))
        self.target = ComboBox(label="target", choices=tuple(TARGET_LABELS), value="predicted region",
                               tooltip="What every method explains: the predicted region of the class, the "
                                       "ground-truth region or the whole output.")
        self.faithfulness = CheckBox(label="faithfulness (MoRF / LeRF)", value=True,
                                     tooltip="Also score each map by region perturbation (most and least relevant "
                                             "blocks first, and a random order): a few forward passes per method.")
        self.run_button = PushButton(text="Compare", tooltip="Run the methods on the case on screen with the model "
                                                             "the Relevance dock loaded (in the background).")
        self.cancel_button = PushButton(text="Cancel", enabled=False, tooltip="Stop the comparison; the layers stay.")
        self.table = NumberTable("methods", "time [s]: run time; D_x / D_GT: input and ground-truth inclusivity (mean "
                                            "over channels); MoRF / LeRF AUC: area under the score when the most / "
                                            "least relevant blocks are flipped first (lower MoRF, higher LeRF: more "
                                            "faithful); hover a header for its meaning")
        self.table.native.setMinimumHeight(220)
        self.gamma_picker = GammaPicker()
        for box in self.gamma_picker.boxes.values():
            box.changed.connect(lambda *_: setattr(self.gammas, "value", self.gamma_picker.spec()))
        self.gammas = LineEdit(label="gammas", value=self.gamma_picker.spec(),
                               tooltip="LRP hyper-parameter search: the gamma values tried for the encoder blocks "
                                       "and, independently, the decoder blocks (epsilon-gamma-box, z-box first).")
        self.search_button = PushButton(text="Search gammas",
                                        tooltip="Score every (encoder, decoder) gamma pair by MoRF / LeRF region "
                                                "perturbation and the inclusivities, from one kept forward pass; "
                                                "the contours are drawn below.")
        self.apply_button = PushButton(text="Apply best", enabled=False,
                                       tooltip="Show the best point's relevance (highest LeRF - MoRF) in the R layers "
                                               "and the Inclusivity dock, as a Run would.")
        self.families = LineEdit(label="scorecard", value="all",
                                 tooltip="The metric families (or metric names) Scorecard measures, comma-separated: "
                                         f"all, {', '.join(FAMILIES)}. Robustness reruns each method on 5 noisy "
                                         "copies of the case, randomisation twice.")
        self.score_button = PushButton(text="Scorecard", tooltip="Score the compared methods on the chosen metrics "
                                                                 "(in the background): table below, figure of "
                                                                 "normalised ranks in the chart.")
        self.scorecard_table = NumberTable("scorecard", "One row per metric, one column per method; a cell's "
                                                        "tooltip says what the metric measures, which direction is "
                                                        "better and how it was measured")
        self.scorecard_table.native.setMinimumHeight(200)
        self.add(self.picker, self.methods, self.target, self.faithfulness, self.run_button, self.cancel_button,
                 self.table, self.families, self.score_button, self.scorecard_table, self.gamma_picker, self.gammas,
                 self.search_button,
                 self.apply_button, self.status)
        self.charts = ThemedCanvas(napari_viewer, figsize=(9, 3.4), min_height=260,
                                   placeholder="Search gammas draws the contours here, Scorecard its figure")
        self.add_native(self.charts.canvas)
        self.search = None  # the last SearchResult
        self.search_button.changed.connect(self.run_search)
        self.apply_button.changed.connect(self.apply_best)
        self._busy_controls = [self.run_button, self.search_button, self.score_button]
        self.score_button.changed.connect(self.run_scorecard)
        self.scorecard = None  # the last scorecard (a DataFrame)
        self.results = None
        self.compared = None  # the last table (a DataFrame)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.session.case_changed.connect(self._on_case)
        self.set_status("load a case and a model in the Relevance dock, then Compare")

    def _on_case(self, _case):
        """Another case is on screen: the table, the contours and the best point belong to the old one."""
        self.results = self.compared = self.search = self.scorecard = None
        self.table.clear_rows()
        self.scorecard_table.clear_rows()
        self.apply_button.enabled = False
        self.charts.clear()
        self.set_status("a new case is on screen: Compare or Search gammas explain it")

    def run(self):
        """Compare the checked methods on the case on screen, in a worker; each map becomes a layer, the table fills."""
        from napari.qt.threading import create_worker

        got = self._case_and_model()
        if got is None:
            return
        case, model = got
        specs = split_methods(self.methods.value)
        target = self._target()
        progress = self.progress_callback(Cancelled)
        faithful = self.faithfulness.value

        def work():
            return compare(model, case, specs, target=target, perturbation=faithful, progress=progress)

        self.start(create_worker(work, _ignore_errors=True), self._done_comparing, busy="comparing ...")

    def _case_and_model(self):
        """The case on screen (read from the layers: after a case switch the new one) and the loaded model."""
        case = self.session.case_on_screen(case_from_layers(self._viewer.layers))
        model = self.session.model
        if model is None or case is None:
            self.set_status("load a case and a model in the Relevance dock first (Load case and model)")
            return None
        self._working_on = case_key(case)
        return case, model

    def _still_on_screen(self, what: str) -> bool:
        """Whether the case a finished job worked on is still the one on screen (else its result is dropped)."""
        if case_key_on_screen(self._viewer) == getattr(self, "_working_on", None):
            return True
        self.set_status(f"the case on screen changed while {what}; its result was dropped: run it again")
        return False

    def _target(self) -> str:
        return TARGET_LABELS[self.target.value]

    def run_search(self):
        """The gamma search on the case on screen, in a worker; the contours are drawn and Apply best enabled."""
        from napari.qt.threading import create_worker


        got = self._case_and_model()
        if got is None:
            return
        case, model = got
        gammas = tuple(float(g) for g in self.gammas.value.split(",") if g.strip())
        progress = self.progress_callback(Cancelled)
        target = self._target()

        def work():
            return lrp_search(model, case, gammas=gammas, target=target, progress=progress)

        self.start(create_worker(work, _ignore_errors=True), self._searched, busy="searching gammas ...")

    def _searched(self, result):
        if self._cancel or not self._still_on_screen("searching"):
            return

        self.search = result
        plot_search(result.table, fig=self.charts.figure)
        self.charts.themed()
        self.apply_button.enabled = True
        b = result.best
        self.set_status(f"best: gamma {b['gamma_encoder']:g} (encoder), {b['gamma_decoder']:g} (decoder); MoRF "
                        f"{b['morf_auc']:.3f}, LeRF {b['lerf_auc']:.3f}; Apply best shows it")

    def apply_best(self):
        """Make the best point's explanation the current one (R layers, Inclusivity dock): no new pass."""
        if self.search is None:
            return
        exp = self.search.best_explanation
        if not self._still_on_screen("the search's result waited"):
            return
        show_explanation(self._viewer, exp, add_case=False, with_relevance=False)
        if not self.session.set_explanation(exp):
            show_explanation(self._viewer, exp, add_case=False, lazy=True)
        self.set_status(f"applied gamma {self.search.best['gamma_encoder']:g} / {self.search.best['gamma_decoder']:g}")

    def run_scorecard(self):
        """Score the methods of the last Compare (on the case on screen) in a worker; table and figure follow."""
        from napari.qt.threading import create_worker

        if not self.results:
            self.set_status("Compare first: the scorecard scores the compared methods")
            return
        runs = dict(self.results)
        if case_key(next(iter(runs.values())).case) != case_key_on_screen(self._viewer):
            self.set_status("the compared methods explain another case: Compare again")
            return
        metrics = [m.strip() for m in self.families.value.split(",") if m.strip()] or ["all"]
        metrics = "all" if metrics == ["all"] else metrics
        try:
            selected_metrics(metrics)
        except ValueError as exc:
            self.set_status(str(exc))
            return
        progress = self.progress_callback(Cancelled)
        self._working_on = case_key_on_screen(self._viewer)

        def work():
            return evaluate(runs, metrics=metrics, progress=progress)

        self.start(create_worker(work, _ignore_errors=True), self._scored, busy="scoring ...")

    def _scored(self, table):
        if self._cancel or not self._still_on_screen("scoring"):
            return
        self.scorecard = table
        wide = table.pivot(index="metric", columns="method", values="value")
        metrics, methods = list(dict.fromkeys(table.metric)), list(dict.fromkeys(table.method))
        wide = wide.reindex(index=metrics, columns=methods)
        self.scorecard_table.show(wide.values.tolist(), metrics, methods)
        settings = table.set_index(["metric", "method"])["settings"]
        for i, metric in enumerate(metrics):
            spec = METRICS[metric]
            for j, method in enumerate(methods):
                item = self.scorecard_table.native.item(i, j)
                if item is not None:
                    how = settings[(metric, method)]
                    item.setToolTip(f"{metric} ({spec.family}, {spec.reference}): {spec.description}. "
                                    f"{spec.better.capitalize()} is better. Measured with: {how}")
        scorecard_figure(table, fig=self.charts.figure)
        self.charts.themed()
        self.set_status(f"scorecard of {len(methods)} methods, {len(metrics)} metrics; hover a cell for what it "
                        "means")

    def _done_comparing(self, result):
        if self._cancel or not self._still_on_screen("comparing"):
            return
        table, results = result
        self.compared, self.results = table, results
        show_comparison(self._viewer, results)
        cols = [c for c in COLUMNS if c in table.columns]
        self.table.show(table[cols].values.tolist(), list(table.method), cols)
        first = next(iter(results.values()))
        self.set_status(f"{len(results)} methods on {first.case.name} with {first.model.card.name} "
                        f"({first.model.path}); layers 'R sum · ...'")
