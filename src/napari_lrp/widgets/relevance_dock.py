"""The Relevance dock widget: case, model, device, rules, per-layer filters; runs LRP off the main thread.

Thin: the decisions live in the Qt-free session (``_session``), the layers in ``_layers``, the worker
lifecycle and the scrolling panel in ``_base``.
"""

from __future__ import annotations

import time

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, FloatSpinBox, PushButton, SpinBox
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox, QDoubleSpinBox, QTableWidget, QTableWidgetItem

from ..io import load_case
from ..layerdata import case_from_layers
from ..lrp.blocks import block_names, filterable_layers
from ..lrp.engine import Cancelled
from ..lrp.filters import FILTER_KINDS, Filter, make_filter
from ..lrp.presets import PRESETS
from ..metrics import dice, layer_mean_power
from ..metrics.components import label_components
from ..models import available_devices, load_model
from ..pipeline import explain, predict_case
from ..samples import sample_case_path, sample_model_path
from ._base import DockPanel
from ._layers import (
    CASE,
    ROLE,
    apply_orientation,
    case_key_on_screen,
    guard_one_case,
    is_kind,
    relevance_colormap,
    show_3d,
    show_case,
    show_errors,
    show_explanation,
    show_prediction,
    show_relevance_as,
    show_uncertainty,
    symmetric_limit,
    upsert,
)
from ._session import TARGET_LABELS, ShownRun, case_key, describe_run, shown_coefficients
from ._tables import elide

TARGETS = tuple(TARGET_LABELS)
UNCERTAINTY = ("none", "MC dropout", "flips (TTA)")
FILTER_TIP = ("Filters act on relevance normalised by its maximum |R|: pass keeps values with alpha1 <= |r| <= "
              "alpha2 and sets the rest to 0; clamp limits |r| to [alpha1, alpha2]; amplify multiplies values "
              "with |r| >= alpha1 by A (alpha2 box); none leaves the relevance as it is.")
PRESET_TIPS = {name: factory(None).description for name, factory in PRESETS.items()}
INSPECTOR_NAME = "R @ layer"


RUN_TIP = "Explain the case on screen (a new case folder is loaded first). Runs in the background; Cancel stops it."


class FilterRow(Container):
    """kind + alpha1 + alpha2 (A for amplify) in one row."""

    def __init__(self, label: str, kind: str = "none", a1: float = 0.0, a2: float = 1.0):
        self.kind = ComboBox(choices=FILTER_KINDS, value=kind, label="", tooltip=FILTER_TIP)
        self.a1 = FloatSpinBox(value=a1, min=0, max=1, step=0.01, label="",
                               tooltip="alpha1: lower bound of |relevance| as a fraction of its maximum "
                                       "(pass, clamp), or the threshold alpha above which amplify multiplies")
        self.a2 = FloatSpinBox(value=a2, min=0, max=10, step=0.01, label="",
                               tooltip="alpha2: upper bound of |relevance| as a fraction of its maximum "
                                       "(pass, clamp), or the factor A of amplify")
        self.a1.label, self.a2.label = "α1", "α2 / A"
        super().__init__(widgets=[self.kind, self.a1, self.a2], layout="horizontal", label=label,
                         labels=True)
        self.margins = (0, 0, 0, 0)

    def filter(self, scope="sample", signs="joint") -> Filter | None:
        """The row's filter.

        Parameters
        ----------
        scope, signs : str
            As for ``make_filter``.

        Returns
        -------
        Filter or None
        """
        return make_filter(self.kind.value, self.a1.value, self.a2.value, scope, signs)


class LayerFilterTable(QTableWidget):
    """The network's layers (name, type, output shape) with a filter per row."""

    COLUMNS = ("layer", "type", "output shape", "filter", "α1", "α2 / A")

    def __init__(self):
        super().__init__(0, len(self.COLUMNS))
        #: called (no arguments) when a row's filter is edited
        self.on_edit = None
        self.setHorizontalHeaderLabels(self.COLUMNS)
        self.setMinimumHeight(220)
        self.setToolTip("One filter per layer, applied to the relevance that layer hands to its inputs "
                        "(blocks first, then single layers). " + FILTER_TIP)

    def set_layers(self, network, shapes: dict | None = None):
        """One row per layer a filter can follow (blocks first), with its type and output shape.

        Parameters
        ----------
        network : torch.nn.Module
            The model's network.
        shapes : dict, optional
            {layer: output shape} when known.
        """
        names = filterable_layers(network)
        self.setRowCount(len(names))
        types = dict(network.named_modules())
        for r, name in enumerate(names):
            shape = (shapes or {}).get(name)
            for c, text in enumerate((elide(name), type(types[name]).__name__,
                                      "" if shape is None else str(tuple(shape)))):
                item = QTableWidgetItem(text)
                item.setFlags(item.flags() & ~item.flags().ItemIsEditable)
                if c == 0:  # a long name shortened in the middle; the whole name in its tooltip and data
                    item.setData(Qt.ItemDataRole.UserRole, name)
                    item.setToolTip(name)
                self.setItem(r, c, item)
            kind = QComboBox()
            kind.addItems(FILTER_KINDS)
            kind.currentTextChanged.connect(self._edited)
            self.setCellWidget(r, 3, kind)
            for c, (v, hi) in zip((4, 5), ((0.0, 1.0), (1.0, 10.0))):
                sb = QDoubleSpinBox()
                sb.setRange(0, hi)
                sb.setSingleStep(0.01)
                sb.setValue(v)
                sb.valueChanged.connect(self._edited)
                self.setCellWidget(r, c, sb)

    def _edited(self, *_):
        if self.on_edit is not None:
            self.on_edit()

    def show_filters(self, filters: dict) -> None:
        """Show a run's filters in the rows; rows without one show 'none'.

        Parameters
        ----------
        filters : dict
            {layer name: Filter}.
        """
        for r, name in enumerate(self.names()):
            f = filters.get(name)
            kind = "none" if f is None else f.kind
            a1, a2 = f.parameters if f is not None and f.parameters else (0.0, 1.0)
            self.cellWidget(r, 3).setCurrentText(kind)
            self.cellWidget(r, 4).setValue(float(a1))
            self.cellWidget(r, 5).setValue(float(a2))

    def set_shapes(self, shapes: dict):
        """Fill the output-shape column.

        Parameters
        ----------
        shapes : dict
            {layer name: output shape}.
        """
        for r, name in enumerate(self.names()):
            shape = shapes.get(name)
            if shape is not None:
                self.item(r, 2).setText(str(tuple(shape)))

    def names(self) -> list[str]:
        """The layers of the rows, in order.

        Returns
        -------
        list of str
        """
        return [self.item(r, 0).data(Qt.ItemDataRole.UserRole) for r in range(self.rowCount())]

    def set_row(self, name: str, kind: str, a1: float, a2: float):
        """Set one row's filter.

        Parameters
        ----------
        name : str
            The layer.
        kind : str
            A filter kind.
        a1, a2 : float
            Its parameters.
        """
        r = self.names().index(name)
        self.cellWidget(r, 3).setCurrentText(kind)
        self.cellWidget(r, 4).setValue(a1)
        self.cellWidget(r, 5).setValue(a2)

    def filters(self, scope="sample", signs="joint") -> dict[str, Filter]:
        """The rows' filters.

        Parameters
        ----------
        scope, signs : str
            The normalisation of every row's filter (as :meth:`FilterRow.filter`).

        Returns
        -------
        dict[str, Filter]
            {layer name: Filter} of the rows whose kind is not 'none'.
        """
        out = {}
        for r, name in enumerate(self.names()):
            f = make_filter(self.cellWidget(r, 3).currentText(), self.cellWidget(r, 4).value(),
                            self.cellWidget(r, 5).value(), scope, signs)
            if f is not None:
                out[name] = f
        return out


class RelevanceWidget(DockPanel):
    """Load a case and a model, choose rules, target and filters, run LRP; results go into layers."""

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer)
        self._build_inputs()
        uncertainty_row = self._build_uncertainty()
        bulk_buttons = self._build_filters()
        self._build_run_controls()
        self.add(self.case_path, self.model_path, self.trust, self.device, self.load_button, self.preset, self.target,
                 self.target_class, self.uncertainty, uncertainty_row, self.scope, self.signs, self.output_filter,
                 self.input_filter, self.bulk, bulk_buttons)
        self.table = LayerFilterTable()
        self.add_native(self.table)
        run_row = Container(widgets=[self.run_button, self.cancel_button], layout="horizontal", labels=False)
        self.add(run_row, self.status, Container(widgets=[self.orientation, self.view_3d], layout="horizontal"),
                 Container(widgets=[self.shown, self.per_modality], layout="horizontal"),
                 self.inspect, self.inspect_button)
        self.place_native_before(self.table, run_row)  # the filter table above Run, after the bulk buttons
        self._busy_controls = [self.run_button, self.load_button]
        self._connect(napari_viewer)

    def _build_inputs(self) -> None:
        """Case, model, device, Load; rules, target, class; how filters normalise."""
        self.case_path = FileEdit(label="case folder", mode="d", value="",
                                  tooltip="A folder with one NIfTI file per modality (and the lesion mask). Empty: "
                                          "the case shown in the viewer (File > Open Sample, or a dropped "
                                          "folder), else sample case 1. A new folder is loaded before Run.")
        self.model_path = FileEdit(label="model", mode="r", value=str(sample_model_path()),
                                   tooltip="The trained network: a model card (.json) next to its weights, a "
                                           "model folder, a MONAI bundle (or its configs/inference.json), or "
                                           "an nnU-Net v2 results folder (or its plans.json: every fold, "
                                           "averaged; a fold_N/checkpoint_final.pth: that fold). Default: the "
                                           "sample model.")
        self.trust = CheckBox(text="run the model's own code", value=False,
                              tooltip="A MONAI bundle whose network or transforms are its own scripts/ code (UNesT, "
                                      "the CECT and DeepEdit bundles) runs only when ticked: read the code first. "
                                      "Unticked, such a model is refused naming the file.")
        self.device = ComboBox(label="device", choices=available_devices(), value="auto",
                               tooltip="Where the network runs: auto picks a CUDA GPU (or Apple MPS) when "
                                       "present, else the CPU.")
        self.load_button = PushButton(text="Load case and model",
                                      tooltip="Show the case (replacing the case on screen), load the model and "
                                              "show its prediction and Dice against the ground truth.")
        self.preset = ComboBox(label="rules", choices=list(PRESETS), value="paper",
                               tooltip="The LRP rule set: " + "; ".join(f"{k}: {v}" for k, v in PRESET_TIPS.items()))
        self.target = ComboBox(label="target", choices=self._target_choices,
                               tooltip="What is explained: the predicted region of the class, the ground-truth "
                                       "region, the whole output, the voxels the model missed (ground truth not "
                                       "predicted) or added (predicted, not ground truth), a 2 mm band around the "
                                       "predicted surface, the largest predicted or ground-truth lesion, after a "
                                       "run every lesion by size and status (Alt-click a lesion on the canvas to "
                                       "pick it), or a labels layer you drew.")
        self.target_class = ComboBox(label="class", choices=self._class_choices, value=1,
                                     tooltip="The class (or region) explained, by name: the model's output channel.")
        self.scope = ComboBox(label="normalise per", choices=("sample", "channel"), value="sample",
                              tooltip="Filters compare |relevance| with its maximum: over the whole case "
                                      "(sample) or per modality channel (channel).")
        self.signs = ComboBox(label="signs", choices=("joint", "separate"), value="joint",
                              tooltip="joint: positive and negative relevance share one maximum; separate: each "
                                      "sign is normalised by its own maximum.")

    def _build_uncertainty(self) -> Container:
        """The uncertainty choice and its row of draws, rate and seed."""
        self.uncertainty = ComboBox(label="uncertainty", choices=UNCERTAINTY, value="none",
                                    tooltip="none: one deterministic run. MC dropout: T runs with dropout sampling "
                                            "(Gal and Ghahramani 2016); flips (TTA): the 8 flips of the volume "
                                            "(as nnU-Net mirrors). The relevance layers show the mean; 'R sd (sum)', "
                                            "'predictive entropy' and 'mutual information' show the spread.")
        self.draws = SpinBox(label="T", value=10, min=2, max=200,
                             tooltip="MC dropout: how many stochastic runs (they run batched; the passes are "
                                     "kept, so moving a filter costs no new forward pass).")
        self.dropout_p = FloatSpinBox(label="p", value=0.0, min=0.0, max=0.9, step=0.05,
                                      tooltip="0: the network's own Dropout rate. Above 0: that rate; a network "
                                              "without Dropout gets dropout after every activation (an "
                                              "approximation: it was not trained with it).")
        self.seed = SpinBox(label="seed", value=0, min=0, max=2**31 - 1,
                            tooltip="The random seed of the draws: the same seed gives the same draws.")
        return Container(widgets=[self.draws, self.dropout_p, self.seed], layout="horizontal")

    def _build_filters(self) -> Container:
        """Output, input and bulk filters and the bulk buttons' row."""
        self.output_filter = FilterRow("output filter")
        self.output_filter.tooltip = "A filter on the starting relevance at the network's output. " + FILTER_TIP
        self.input_filter = FilterRow("input filter")
        self.input_filter.tooltip = "A filter on the final heatmap at the input. " + FILTER_TIP
        self.bulk = FilterRow("bulk filter", "clamp", 0.0, 0.2)
        self.bulk.tooltip = "The filter the buttons below put on every (encoder) block. " + FILTER_TIP
        self.bulk_encoder = PushButton(text="every encoder block", tooltip="Put the bulk filter after every "
                                                                          "encoder block (the paper's setting).")
        self.bulk_all = PushButton(text="every block", tooltip="Put the bulk filter after every block.")
        self.bulk_clear = PushButton(text="clear", tooltip="Remove every per-layer filter.")
        return Container(widgets=[self.bulk_encoder, self.bulk_all, self.bulk_clear], layout="horizontal",
                                 labels=False)

    def _build_run_controls(self) -> None:
        """Layer inspector, Run, Cancel, 3D view and orientation."""
        self.inspect = ComboBox(label="layer inspector", choices=self._kept_choices,
                                tooltip="Relevance at a block's output (sum over its channels), shown as one "
                                        "image layer over the case; blocks first.")
        self.inspect_button = PushButton(text="Show layer relevance",
                                         tooltip="Show the relevance at the chosen layer's output over the case "
                                                 "(one layer, 'R @ layer', replaced each time).")
        self.run_button = PushButton(text="Run", tooltip=RUN_TIP)
        self.cancel_button = PushButton(text="Cancel", enabled=False,
                                        tooltip="Stop the running Load or Run; the layers stay as they were.")
        self.view_3d = PushButton(text="3D view", tooltip="Switch to a 3D view of |relevance| (maximum intensity), "
                                                          "the anatomy faint; press again for 2D.")
        self.shown = ComboBox(label="show R of", choices=self._shown_choices,
                              tooltip="What the relevance layer shows: the sum over the modalities, or one "
                                      "modality's relevance (the same layer, renamed 'R <modality>').")
        self.per_modality = CheckBox(text="a layer per modality", value=False,
                                     tooltip="Also add one relevance layer per modality ('R <modality>', hidden "
                                             "until shown); the relevance layer then shows the sum.")
        self.orientation = ComboBox(label="view", choices=("radiological", "neurological"), value="radiological",
                                    tooltip="radiological: the patient's right on the screen's left (as ITK-SNAP "
                                            "and 3D Slicer); neurological: the patient's right on the right.")

    def _connect(self, napari_viewer) -> None:
        """Buttons to their actions; the session's case and the viewer's layers to the dock."""
        self.load_button.changed.connect(self.load)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.inspect_button.changed.connect(lambda: self.show_layer_relevance(self.inspect.value))
        self.bulk_encoder.changed.connect(lambda: self._bulk("encoder"))
        self.bulk_all.changed.connect(lambda: self._bulk("all"))
        self.bulk_clear.changed.connect(lambda: self._bulk(None))
        self.view_3d.changed.connect(self._toggle_3d)
        self.orientation.changed.connect(self._set_orientation)
        self.shown.changed.connect(lambda value: show_relevance_as(self._viewer, shown=value))
        self.per_modality.changed.connect(self._per_modality)
        self._ran_with = None  # what the last finished run explained (request())
        for w in (self.preset, self.target, self.target_class, self.uncertainty, self.draws, self.dropout_p, self.seed,
                  self.scope, self.signs, *self.output_filter, *self.input_filter):
            w.changed.connect(self._mark_changed)
        self.table.on_edit = self._mark_changed
        self.session.case_changed.connect(self._on_case)
        self.session.run_requested.connect(self.offer_run)
        napari_viewer.mouse_drag_callbacks.append(self._on_canvas_click)
        napari_viewer.layers.events.inserted.connect(lambda e: self.target.reset_choices())
        napari_viewer.layers.events.removed.connect(lambda e: self.target.reset_choices())
        guard_one_case(napari_viewer)

    def _on_case(self, case):
        """Another case is on screen: the status and the layer inspector no longer describe it."""
        self.inspect.reset_choices()
        self.shown.reset_choices()
        if case is None:
            self.set_status("a new case is on screen: Run explains it")

    def offer_run(self, action: str) -> None:
        """Another dock needs a run of the case on screen: bring this tab to the front with Run focused, and say so.

        Parameters
        ----------
        action : str
            What the other dock was asked to do.
        """
        if self.worker is not None:
            return
        dock = self.own_dock()
        if dock is not None:
            dock.show()
            dock.raise_()
        self.run_button.native.setFocus()
        case = self.session.case.name if self.session.case is not None else "the case on screen"
        self.set_status(f"to {action}, {case} needs a run: press Run (Enter) to explain it")

    # ---- parameters ------------------------------------------------------------------------
    def _class_choices(self, _widget=None):
        model = getattr(getattr(self, "session", None), "model", None)
        names = model.card.classes if model is not None else ["background", "foreground"]
        return [(f"{i} {name}", i) for i, name in enumerate(names)]

    def _lesion_choices(self) -> dict:
        """{picker label: target spec} for every lesion of the last run's class and of the ground truth."""
        exp = getattr(getattr(self, "session", None), "explanation", None)
        if exp is None:
            return {}
        cached = getattr(self, "_lesions", None)
        if cached is not None and cached[0] is exp:  # the picker asks on every layer change: label once per run
            return cached[1]
        choices = {}
        for _i, r in exp.components().iterrows():
            predicted = r.source == "prediction"
            status = f", {r.status}" if r.status else ""
            label = (f"{'predicted' if predicted else 'ground-truth'} lesion {int(r.component)} "
                     f"({r.volume_ml:.2f} ml{status})")
            choices[label] = f"{'component' if predicted else 'gt-component'}:{int(r.component)}"
        self._lesions = (exp, choices)
        return choices

    def _target_choices(self, _widget=None):
        viewer = getattr(self, "_viewer", None)
        labels = [f"labels: {ly.name}" for ly in viewer.layers if is_kind(ly, "labels")
                  and ly.metadata.get(ROLE) not in ("label", "prediction", "errors")] if viewer is not None else []
        return list(TARGETS) + list(self._lesion_choices()) + labels

    def pick_lesion(self, world_position) -> str | None:
        """Choose in the target picker the lesion under a point of the canvas (a predicted lesion of the run's
        class first, else a ground-truth lesion).

        Parameters
        ----------
        world_position : sequence of float
            The point in napari world coordinates (mm, Z/Y/X; a 2D click's position in the displayed slice).

        Returns
        -------
        str or None
            The target spec chosen (``component:K`` / ``gt-component:K``), or None when no lesion is there.
        """
        exp = self.session.explanation
        if exp is None:
            self.set_status("Run first: the lesions of a run can be picked on the canvas")
            return None
        index = np.round(exp.case.grid.viewer_to_index(np.asarray(world_position, dtype=float)[-3:])).astype(int)
        if np.any(index < 0) or np.any(index >= np.asarray(exp.case.shape)):
            return None
        for kind, mask in (("component", exp.predicted_region()), ("gt-component", exp.ground_truth)):
            if mask is None or not mask[tuple(index)]:
                continue
            labels, _n = label_components(mask)
            spec = f"{kind}:{int(labels[tuple(index)])}"
            label = next(k for k, v in self._lesion_choices().items() if v == spec)
            self.target.reset_choices()
            self.target.value = label
            self.set_status(f"picked {label}: Run explains it")
            return spec
        return None

    def _on_canvas_click(self, _viewer, event):
        """Alt-click on a lesion picks it as the target."""
        if event.type == "mouse_press" and "Alt" in {str(getattr(m, "name", m)) for m in event.modifiers}:
            self.pick_lesion(event.position)

    def target_value(self):
        """explain's target for the picker's entry.

        Returns
        -------
        str or numpy.ndarray
            A target spec, or a drawn labels layer's mask (Z, Y, X) bool.
        """
        t = self.target.value
        if t in TARGET_LABELS:
            return TARGET_LABELS[t]
        lesions = self._lesion_choices()
        if t in lesions:
            return lesions[t]
        name = t.split(": ", 1)[1]
        return np.asarray(self._viewer.layers[name].data) > 0

    def _kept_choices(self, _widget=None):
        exp = getattr(getattr(self, "session", None), "explanation", None)
        if exp is None:
            return ["(run first)"]
        names = [n for n, R in exp.kept.items() if R.ndim == 5]
        blocks = [n for n in block_names(exp.network) if n in names]
        return blocks + [n for n in names if n not in blocks] or ["(none)"]

    def show_layer_relevance(self, name: str):
        """Show 'R @ layer': the channel sum of the relevance at a layer's output, placed over the case.

        Its voxels are larger where the network has downsampled; one inspector layer, replaced in place.

        Parameters
        ----------
        name : str
            A kept layer.

        Returns
        -------
        napari.layers.Image or None
            None when nothing can be shown (the status says why).
        """
        exp = self.session.explanation
        if exp is None or name not in exp.kept:
            return None
        placed = exp.kept_on_case_grid(name)
        R = exp.kept[name][0].sum(0).float().cpu().numpy()  # the channel sum, as torch sums it
        m = symmetric_limit(R)
        if INSPECTOR_NAME in self._viewer.layers and self._viewer.layers[INSPECTOR_NAME].data.shape != R.shape:
            self._viewer.layers.remove(INSPECTOR_NAME)
        meta = {ROLE: "inspector", CASE: case_key(exp.case), "relevance_at": name}
        new = INSPECTOR_NAME not in self._viewer.layers
        layer = upsert(self._viewer, INSPECTOR_NAME, R, "image", contrast_limits=(-m, m), metadata=meta,
                        **({"colormap": relevance_colormap(), "opacity": 0.7, "scale": placed.scale,
                            "translate": placed.translate} if new else {}))
        layer.scale, layer.translate, layer.metadata = placed.scale, placed.translate, meta
        self.set_status(f"{exp.case.name}: relevance at {name} shown as '{INSPECTOR_NAME}'")
        return layer

    def sampling(self) -> dict:
        """The uncertainty options as ``explain`` keywords.

        Returns
        -------
        dict
            Empty for a deterministic run.
        """
        mode = self.uncertainty.value
        if mode == "MC dropout":
            return {"mc_samples": self.draws.value, "dropout": self.dropout_p.value or None,
                    "seed": self.seed.value}
        if mode == "flips (TTA)":
            return {"tta": "flips", "seed": self.seed.value}
        return {}

    def request(self) -> tuple:
        """What Run would explain now, in a comparable form: rules, target, class, draws and every filter.

        Returns
        -------
        tuple
            Equal to the last run's exactly when nothing that changes the relevance was edited since.
        """
        filters = tuple(sorted((name, repr(f)) for name, f in self.filters().items()))
        return (self.preset.value, self.target.value, self.target_class.value, tuple(sorted(self.sampling().items())),
                filters)

    def _mark_changed(self, *_):
        """The Run button says when the settings differ from the run on screen (until the next Run)."""
        if self._ran_with is None:
            return
        changed = self.request() != self._ran_with
        self.run_button.text = "Run (changed since the last run)" if changed else "Run"
        self.run_button.tooltip = ("The relevance on screen was made with other settings: Run explains with these. "
                                   if changed else "") + RUN_TIP

    def filters(self) -> dict[str, Filter]:
        """The output, input and per-layer filters the dock describes, as ``explain``'s ``filters``.

        Returns
        -------
        dict[str, Filter]
        """
        scope, signs = self.scope.value, self.signs.value
        out = self.table.filters(scope, signs)
        for place, row in (("output", self.output_filter), ("input", self.input_filter)):
            f = row.filter(scope, signs)
            if f is not None:
                out[place] = f
        return out

    def _bulk(self, which):
        if self.session.model is None:
            return
        names = set(self.table.names())
        for name in names:
            self.table.set_row(name, "none", 0.0, 1.0)
        if which is None:
            return
        for name in block_names(self.session.model.network, which):
            if name in names:
                self.table.set_row(name, self.bulk.kind.value, self.bulk.a1.value, self.bulk.a2.value)

    def _toggle_3d(self, *_):
        on = self._viewer.dims.ndisplay == 2
        show_3d(self._viewer, on)
        self.view_3d.text = "2D view" if on else "3D view"

    def _shown_choices(self, _widget=None):
        exp = self.session.explanation
        case = exp.case if exp is not None else self.session.case
        return ["sum", *(case.modalities if case is not None else ())]

    def _per_modality(self, on: bool) -> None:
        if on:
            self.shown.value = "sum"
        self.shown.enabled = not on
        show_relevance_as(self._viewer, per_modality=on)

    def _set_orientation(self, value):
        apply_orientation(self._viewer, value == "radiological")

    # ---- actions ---------------------------------------------------------------------------
    def _typed_path(self) -> str:
        path = str(self.case_path.value)
        return "" if path in ("", ".") else path

    def _plan(self, reload: bool):
        """(loader or None, case or None, path): read on the main thread (layers), used by the worker."""
        plan = self.session.plan(self._typed_path(), case_from_layers(self._viewer.layers), reload)
        if plan.load_path is None:
            return None, plan.case, None
        path = plan.load_path
        return (lambda: load_case(path or sample_case_path(1))), None, path

    def _model_loader(self):
        path, device, trust = str(self.model_path.value), self.device.value, bool(self.trust.value)
        model = self.session.reusable_model(path, device)
        return (lambda: model) if model is not None else (lambda: load_model(path, device=device, trust=trust)), \
            path, device

    def load(self):
        """Load the case (the typed folder, else the case on screen, else sample case 1) and the model in a
        worker, then show the case (replacing the case on screen), the prediction and its Dice."""
        from napari.qt.threading import create_worker

        loader, case, path = self._plan(reload=True)
        get_model, mpath, device = self._model_loader()

        def work():
            c = loader() if loader is not None else case
            m = get_model()
            pred, logits, shapes = predict_case(m, c)
            # independent regions by the network's outputs: a one-channel sigmoid model is binary (two names)
            regions = m.card.output_activation == "sigmoid" and int(logits.shape[0]) > 1
            return c, m, pred, shapes, path, mpath, device, regions

        self._cancel = False
        self.start(create_worker(work, _ignore_errors=True), self._loaded, busy="loading ...")

    def _loaded(self, result):
        case, model, pred, shapes, path, mpath, device, regions = result
        if self._cancel:
            return
        self._show_case(case, path)
        self.session.set_model(model, mpath, device)
        show_prediction(self._viewer, model.card.label_map(pred), case)
        self.table.set_layers(model.network, shapes)
        self.target_class.reset_choices()
        self.target_class.value = model.card.target_class
        self._show_dice(pred, case, f"{model.card.name} on {model.device}", regions)

    def _show_case(self, case, path):
        show_case(self._viewer, case)
        self.session.set_case(case, loaded_path=path)

    def _show_dice(self, pred, case, prefix, regions: bool = False):
        """The status after Load or Run: ``prefix`` and the Dice of the prediction (every region's when the
        network's outputs are independent sigmoid regions, decided by their number, not by the card's names)."""
        cls = self.target_class.value
        card = self.session.model.card if self.session.model is not None else None
        if card is not None and regions:  # independent regions: every region's Dice
            scores = [dice(pred, card.class_ground_truth(case, k), k, multilabel=True)
                      for k in range(len(card.classes))]
            text = "Dice " + ", ".join(f"{name} {'n/a' if np.isnan(d) else f'{d:.3f}'}"
                                       for name, d in zip(card.classes, scores))
            self.set_status(f"{case.name}: {prefix}; {text}")
            return
        if cls == 0:
            text = "Dice n/a (class 0 is the background)"
        else:
            try:
                d = dice(pred, case.ground_truth, cls)
                text = f"Dice {'n/a (no ground truth)' if np.isnan(d) else f'{d:.3f}'}"
            except ValueError as exc:
                text = f"Dice n/a ({exc})"
        self.set_status(f"{case.name}: {prefix}; {text}")

    def run(self):
        """Explain the case on screen (a newly typed case folder is loaded first) in a worker thread with
        progress; the layers are updated in place when it finishes."""
        from napari.qt.threading import create_worker

        loader, case, path = self._plan(reload=False)
        get_model, mpath, device = self._model_loader()
        kw = dict(preset=self.preset.value, filters=self.filters(), target=self.target_value(),
                  target_class=self.target_class.value, keep=True, **self.sampling())
        progress = self.progress_callback(Cancelled)
        view = self.session.view

        def work():
            t0 = time.perf_counter()
            c = loader() if loader is not None else case
            m = get_model()
            exp = explain(m, c, progress=progress, **kw)
            seconds = time.perf_counter() - t0
            sd = None if exp.samples is None else exp.sample_heatmaps(None).sum(axis=1).std(axis=0)
            # measures, the spread and the heatmap as shown off the main thread
            shown = None
            if view is not None:
                R = exp.heatmap(view.filter)
                shown = ShownRun(exp, view, R, shown_coefficients(exp, R, view))
            return exp, layer_mean_power(exp) if exp.kept else {}, path, mpath, device, sd, seconds, shown

        self.start(create_worker(work, _ignore_errors=True), self._finished)

    def _finished(self, result):
        exp, power, path, mpath, device, sum_sd, seconds, shown = result
        on_screen = case_key_on_screen(self._viewer)
        if path is None and on_screen is not None and on_screen != case_key(exp.case):
            self.set_status(f"the case on screen changed while {exp.case.name} was explained; that run was "
                            "dropped: Run explains the case on screen")
            return
        new_model = self.session.model is not exp.model
        if path is not None:
            self._show_case(exp.case, path)
        else:
            self.session.set_case(exp.case)
        self.session.layer_power = power  # after the case: a new case forgets the old results
        self.session.shown = shown
        self.session.set_model(exp.model, mpath, device)
        show_explanation(self._viewer, exp, add_case=path is not None, with_relevance=False)
        if not self.session.set_explanation(exp):  # no Inclusivity widget drew the relevance
            show_explanation(self._viewer, exp, add_case=False, lazy=True)
        show_uncertainty(self._viewer, exp, sum_sd)
        show_errors(self._viewer, exp)
        # the dock's own tables on the next turn, so the window draws the layers in between
        self.later(lambda: self._describe_run(exp, new_model, seconds))

    def _describe_run(self, exp, new_model: bool, seconds: float) -> None:
        """The filter table (the run's filters), the pickers and the status of a finished run."""
        if self.session.explanation is not exp:
            return
        if new_model or self.table.rowCount() == 0:
            self.table.set_layers(exp.model.network)
        self.table.show_filters(exp.filters)  # what the run used, also after a model switch
        self.target.reset_choices()
        self.inspect.reset_choices()
        self.shown.reset_choices()
        self.table.set_shapes(exp.layer_shapes)
        self._show_dice(exp.prediction, exp.case, describe_run(exp, seconds), exp.multilabel)
        self._ran_with = self.request()
        self._mark_changed()
        ledger = exp.ledger
        if ledger.unhandled or abs(ledger.unaccounted) > 1e-5:
            ops = ", ".join(ledger.unhandled) or "none named"
            self.set_status(f"{self.status.value}; warning: {ledger.unaccounted:.1%} of the relevance is "
                            f"unaccounted (operations without a rule: {ops})")
