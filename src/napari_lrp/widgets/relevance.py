"""The Relevance dock widget: case, model, device, rules, per-layer filters; runs LRP off the main thread."""

from __future__ import annotations

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, FloatSpinBox, Label, PushButton, SpinBox
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QComboBox, QDoubleSpinBox, QTableWidget, QTableWidgetItem

from ..explanation import explain, predict_case
from ..io import Case, CaseError, load_case
from ..lrp.blocks import block_names
from ..lrp.engine import Cancelled
from ..lrp.filters import FILTER_KINDS, Filter, make_filter
from ..lrp.presets import PRESETS
from ..metrics import dice
from ..models import available_devices, load_model
from ..samples import sample_case_path, sample_model_path
from ._layers import show_case, show_explanation, show_prediction
from ._session import session_for

TARGETS = ("predicted region", "ground truth", "whole output")


class FilterRow(Container):
    """kind + alpha1 + alpha2 (A for amplify) in one row."""

    def __init__(self, label: str, kind: str = "none", a1: float = 0.0, a2: float = 1.0):
        self.kind = ComboBox(choices=FILTER_KINDS, value=kind, label="")
        self.a1 = FloatSpinBox(value=a1, min=0, max=1, step=0.01, label="")
        self.a2 = FloatSpinBox(value=a2, min=0, max=10, step=0.01, label="")
        super().__init__(widgets=[self.kind, self.a1, self.a2], layout="horizontal", label=label,
                         labels=False)
        self.margins = (0, 0, 0, 0)

    def filter(self, scope="sample", signs="joint") -> Filter | None:
        return make_filter(self.kind.value, self.a1.value, self.a2.value, scope, signs)


class _Bridge(QObject):
    progressed = Signal(int, int)


class LayerFilterTable(QTableWidget):
    """The network's layers (name, type, output shape) with a filter per row."""

    COLUMNS = ("layer", "type", "output shape", "filter", "α1", "α2 / A")

    def __init__(self):
        super().__init__(0, len(self.COLUMNS))
        self.setHorizontalHeaderLabels(self.COLUMNS)
        self.setMinimumHeight(180)

    def set_layers(self, network, shapes: dict | None = None, blocks: list[str] | None = None):
        names = list(blocks or [])
        for name, m in network.named_modules():
            if name and name not in names and next(iter(m.children()), None) is None and hasattr(m, "weight"):
                names.append(name)
        self.setRowCount(len(names))
        types = dict(network.named_modules())
        for r, name in enumerate(names):
            shape = (shapes or {}).get(name)
            for c, text in enumerate((name, type(types[name]).__name__, "" if shape is None else str(tuple(shape)))):
                item = QTableWidgetItem(text)
                item.setFlags(item.flags() & ~item.flags().ItemIsEditable)
                self.setItem(r, c, item)
            kind = QComboBox()
            kind.addItems(FILTER_KINDS)
            self.setCellWidget(r, 3, kind)
            for c, (v, hi) in zip((4, 5), ((0.0, 1.0), (1.0, 10.0))):
                sb = QDoubleSpinBox()
                sb.setRange(0, hi)
                sb.setSingleStep(0.01)
                sb.setValue(v)
                self.setCellWidget(r, c, sb)

    def set_shapes(self, shapes: dict):
        for r in range(self.rowCount()):
            shape = shapes.get(self.item(r, 0).text())
            if shape is not None:
                self.item(r, 2).setText(str(tuple(shape)))

    def names(self) -> list[str]:
        return [self.item(r, 0).text() for r in range(self.rowCount())]

    def set_row(self, name: str, kind: str, a1: float, a2: float):
        r = self.names().index(name)
        self.cellWidget(r, 3).setCurrentText(kind)
        self.cellWidget(r, 4).setValue(a1)
        self.cellWidget(r, 5).setValue(a2)

    def filters(self, scope="sample", signs="joint") -> dict[str, Filter]:
        out = {}
        for r, name in enumerate(self.names()):
            f = make_filter(self.cellWidget(r, 3).currentText(), self.cellWidget(r, 4).value(),
                            self.cellWidget(r, 5).value(), scope, signs)
            if f is not None:
                out[name] = f
        return out


def case_from_layers(viewer) -> Case | None:
    """A Case from modality Image layers opened by napari-lrp (and their label), or None."""
    imgs = [ly for ly in viewer.layers if type(ly).__name__ == "Image" and "modality" in ly.metadata]
    if not imgs:
        return None
    grid = imgs[0].metadata["napari_lrp_grid"]
    imgs = [ly for ly in imgs if ly.data.shape == imgs[0].data.shape]
    label = None
    for ly in viewer.layers:
        if type(ly).__name__ == "Labels" and ly.name in ("OT", "label") and ly.data.shape == imgs[0].data.shape:
            label = np.asarray(ly.data, dtype=np.uint8)
    return Case(image=np.stack([np.asarray(ly.data, np.float32) for ly in imgs]),
                modalities=[ly.metadata["modality"] for ly in imgs], label=label, grid=grid,
                name=imgs[0].metadata.get("case", "case"), files=list(imgs[0].metadata.get("files", [])))


class RelevanceWidget(Container):
    """Load a case and a model, choose rules, target and filters, run LRP; results go into layers."""

    def __init__(self, napari_viewer):
        self._viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.case_path = FileEdit(label="case folder", mode="d", value="",
                                  tooltip="empty: the case layers in the viewer, else the sample case")
        self.model_path = FileEdit(label="model", mode="r", value=str(sample_model_path()),
                                   tooltip="model card (.json), model folder or MONAI bundle")
        self.device = ComboBox(label="device", choices=available_devices(), value="auto")
        self.load_button = PushButton(text="Load case and model")
        self.preset = ComboBox(label="rules", choices=list(PRESETS), value="paper")
        self.target = ComboBox(label="target", choices=self._target_choices)
        self.target_class = SpinBox(label="class", value=1, min=0, max=20)
        self.scope = ComboBox(label="normalise per", choices=("sample", "channel"), value="sample")
        self.signs = ComboBox(label="signs", choices=("joint", "separate"), value="joint")
        self.output_filter = FilterRow("output filter")
        self.input_filter = FilterRow("input filter")
        self.bulk = FilterRow("bulk filter", "clamp", 0.0, 0.2)
        self.bulk_encoder = PushButton(text="every encoder block")
        self.bulk_all = PushButton(text="every block")
        self.bulk_clear = PushButton(text="clear")
        bulk_buttons = Container(widgets=[self.bulk_encoder, self.bulk_all, self.bulk_clear], layout="horizontal",
                                 labels=False)
        self.inspect = ComboBox(label="layer inspector", choices=self._kept_choices,
                                tooltip="relevance at a layer's output (sum over its channels) as an image layer")
        self.inspect_button = PushButton(text="Show layer relevance")
        self.run_button = PushButton(text="Run")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="")
        super().__init__(widgets=[self.case_path, self.model_path, self.device, self.load_button, self.preset,
                                  self.target, self.target_class, self.scope, self.signs, self.output_filter,
                                  self.input_filter, self.bulk, bulk_buttons])
        self.table = LayerFilterTable()
        self.native.layout().addWidget(self.table)
        self.extend([Container(widgets=[self.run_button, self.cancel_button], layout="horizontal", labels=False),
                     self.status, self.inspect, self.inspect_button])
        self._bridge = _Bridge()
        self._bridge.progressed.connect(self._on_progress)
        self._pbar = None
        self._cancel = False
        self.worker = None
        self.load_button.changed.connect(self.load)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.inspect_button.changed.connect(lambda: self.show_layer_relevance(self.inspect.value))
        self.bulk_encoder.changed.connect(lambda: self._bulk("encoder"))
        self.bulk_all.changed.connect(lambda: self._bulk("all"))
        self.bulk_clear.changed.connect(lambda: self._bulk(None))
        napari_viewer.layers.events.inserted.connect(lambda e: self.target.reset_choices())
        napari_viewer.layers.events.removed.connect(lambda e: self.target.reset_choices())

    # ---- parameters ------------------------------------------------------------------------
    def _target_choices(self, _widget=None):
        labels = [f"labels: {ly.name}" for ly in self._viewer.layers
                  if type(ly).__name__ == "Labels" and ly.name != "prediction"] if hasattr(self, "_viewer") else []
        return list(TARGETS) + labels

    def target_value(self):
        t = self.target.value
        if t == "predicted region":
            return "region"
        if t == "ground truth":
            return "groundtruth"
        if t == "whole output":
            return "output"
        name = t.split(": ", 1)[1]
        return np.asarray(self._viewer.layers[name].data) > 0

    def _kept_choices(self, _widget=None):
        exp = getattr(getattr(self, "session", None), "explanation", None)
        if exp is None:
            return ["(run first)"]
        return [n for n, R in exp.kept.items() if R.ndim == 5] or ["(none)"]

    def show_layer_relevance(self, name: str):
        """Add (or update) 'R @ name': the channel sum of the relevance at that layer's output, scaled
        to lie over the case (its voxels are larger where the network has downsampled)."""
        exp = self.session.explanation
        if exp is None or name not in exp.kept:
            return None
        from ._layers import _relevance_colormap, _upsert, symmetric_limit

        placed = exp.kept_on_case_grid(name)
        R = exp.kept[name][0].sum(0).float().cpu().numpy()  # the channel sum, as torch sums it
        scale, translate = placed.scale, placed.translate
        m = symmetric_limit(R)
        layer_name = f"R @ {name}"
        new = layer_name not in self._viewer.layers
        layer = _upsert(self._viewer, layer_name, R, "image", contrast_limits=(-m, m),
                        **({"colormap": _relevance_colormap(), "opacity": 0.7, "scale": tuple(scale),
                            "translate": tuple(translate), "units": ("mm", "mm", "mm")} if new else {}))
        layer.scale, layer.translate = tuple(scale), tuple(translate)
        return layer

    def filters(self) -> dict[str, Filter]:
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

    # ---- actions ---------------------------------------------------------------------------
    def _case_source(self, reuse: bool = True):
        """For the worker, a callable giving the case: the case folder, else the case layers in the viewer
        (read here, on the main thread), else sample case 1; with ``reuse`` a loaded session case first."""
        if reuse and self.session.case is not None:
            case = self.session.case
            return lambda: case
        path = str(self.case_path.value)
        if path not in ("", "."):
            return lambda: load_case(path)
        layer_case = case_from_layers(self._viewer)
        if layer_case is not None:
            return lambda: layer_case
        return lambda: load_case(sample_case_path(1))

    def load(self):
        """Load case and model (worker), then show the case, the prediction and its Dice."""
        from napari.qt.threading import create_worker

        get_case = self._case_source(reuse=False)  # Load reads the case anew
        model_path, device = str(self.model_path.value), self.device.value

        def work():
            case = get_case()
            model = load_model(model_path, device=device)
            pred, _logits, shapes = predict_case(model, case)
            return case, model, pred, shapes

        self._start(create_worker(work, _ignore_errors=True), self._loaded)

    def _loaded(self, result):
        case, model, pred, shapes = result
        self.session.case, self.session.model = case, model
        show_case(self._viewer, case)
        show_prediction(self._viewer, pred, case)
        self.table.set_layers(model.network, shapes, block_names(model.network))
        self.target_class.max = max(len(model.card.classes) - 1, 1)
        self.target_class.value = model.card.target_class
        self._show_dice(pred, case, f"{model.card.name} on {model.device}")

    def _show_dice(self, pred, case, prefix):
        d = dice(pred, case.ground_truth, self.target_class.value)
        self.status.value = f"{prefix}; Dice {'n/a' if np.isnan(d) else f'{d:.3f}'}"

    def run(self):
        """Run LRP in a worker thread with progress; layers are updated in place when it finishes."""
        from napari.qt.threading import create_worker

        get_case = self._case_source()
        model = self.session.model
        model_path, device = str(self.model_path.value), self.device.value
        kw = dict(preset=self.preset.value, filters=self.filters(), target=self.target_value(),
                  target_class=self.target_class.value, keep=True)
        self._cancel = False

        def progress(done, total):
            if self._cancel:
                raise Cancelled("cancelled by the user")
            self._bridge.progressed.emit(done, total)

        def work():
            c = get_case()
            m = model or load_model(model_path, device=device)
            return explain(m, c, progress=progress, **kw)

        self._start(create_worker(work, _ignore_errors=True), self._finished)

    def _start(self, worker, on_return):
        self.worker = worker
        worker.returned.connect(on_return)
        worker.errored.connect(self._errored)
        worker.finished.connect(self._done)
        self.run_button.enabled = self.load_button.enabled = False
        self.cancel_button.enabled = True
        self.status.value = "working ..."
        worker.start()

    def cancel(self):
        self._cancel = True
        if self.worker is not None:
            self.worker.quit()

    def _on_progress(self, done, total):
        from napari.utils import progress

        if self._pbar is None:
            self._pbar = progress(total=total, desc="relevance")
        self._pbar.update(done - self._pbar.n)

    def _finished(self, exp):
        new_model = self.session.model is not exp.model
        self.session.case, self.session.model = exp.case, exp.model
        if new_model or self.table.rowCount() == 0:
            self.table.set_layers(exp.model.network, None, block_names(exp.model.network))
        self.session.set_explanation(exp)
        show_explanation(self._viewer, exp)
        self.inspect.reset_choices()
        self.table.set_shapes(exp.layer_shapes)
        self._show_dice(exp.prediction, exp.case, f"{exp.preset} on {exp.model.device}")

    def _errored(self, exc):
        from napari.utils.notifications import show_error, show_info

        if isinstance(exc, Cancelled):
            show_info("napari-lrp: run cancelled; the layers are as before")
            self.status.value = "cancelled"
            return
        msg = str(exc) if isinstance(exc, (CaseError, ValueError, TypeError, RuntimeError)) else repr(exc)
        self.status.value = f"error: {msg}"
        show_error(f"napari-lrp: {msg}")

    def _done(self):
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self.run_button.enabled = self.load_button.enabled = True
        self.cancel_button.enabled = False
        self.worker = None

