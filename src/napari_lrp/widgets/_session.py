"""What the dock widgets of one viewer share (Qt-free): the case on screen, the model, the explanation,
and the per-viewer layer state. The widgets bind to it; the decisions (which case a Run explains, when a
model must be loaded anew) live here so they can be tested without a display.

Rule: the viewer shows exactly one case, the one named in the status line. Load replaces its images,
label, prediction and relevance; Run explains exactly the case on screen; a case folder typed in but not
loaded yet is loaded first (also after a failed Load: it is tried again, never the old case explained).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

from psygnal import Signal

from ..metrics import input_mask, measure


def case_key(case) -> str:
    """Identity of a case on screen (``Case.key``), stored in every layer it owns."""
    return case.key


#: the target picker's entries and what each explains (explain's target specs), in menu order; a drawn
#: labels layer adds "drawn: <layer name>" entries after them
TARGET_LABELS = {"predicted region": "region", "ground truth": "groundtruth", "whole output": "output",
                 "false negatives (missed)": "false-negative", "false positives": "false-positive",
                 "border 2 mm": "border:2", "largest predicted lesion": "component:1",
                 "largest ground-truth lesion": "gt-component:1"}


def describe_run(exp, seconds: float | None = None) -> str:
    """What a run was, for the status line: preset, model, filters, device, seconds, draws and the share of the
    relevance no rule accounts for.

    Parameters
    ----------
    exp : Explanation
        The run.
    seconds : float, optional
        How long it took.

    Returns
    -------
    str
        For example "paper · model sample UNet3D · filters clamp(0, 0.2) at input · cpu · 2.1 s · unaccounted 0.0%".
    """
    filters = ", ".join(f"{f.kind}({', '.join(f'{v:g}' for v in f.parameters)}) at {place}"
                        for place, f in exp.filters.items()) or "none"
    parts = [exp.preset if exp.method == "lrp" else exp.method, f"model {exp.model.card.name}", f"filters {filters}",
             str(exp.model.device)]
    if seconds is not None:
        parts.append(f"{seconds:.1f} s")
    parts.append(f"unaccounted {abs(exp.ledger.unaccounted):.1%}")
    if exp.sampling:
        parts.append(f"mean of {exp.sampling['draws']} draws")
    return " · ".join(parts)


@dataclass(frozen=True)
class ShownView:
    """How a run's relevance is shown and scored (the Inclusivity dock edits it): the heatmap filter in place of
    the run's input filter, the inclusivities' thresholds and the colour limit's percentile of |R|."""

    filter: object = None
    tau_r: float = 0.5
    tau_x: float = 0.1
    percentile: float = 99.9


def shown_coefficients(exp, relevance, view: ShownView, image_mask=None):
    """The coefficient table of a run as shown: the mean and sd over the draws of a sampled run, else the
    measures of ``relevance`` (the heatmap as shown) per channel and their mean.

    Parameters
    ----------
    exp : Explanation
        The run.
    relevance : numpy.ndarray
        (C, Z, Y, X), the run's relevance with the view's heatmap filter.
    view : ShownView
        The filter and thresholds.
    image_mask : numpy.ndarray, optional
        ``input_mask(exp.input_image, view.tau_x)`` when already at hand.

    Returns
    -------
    pandas.DataFrame
        One row per channel and the mean; columns as :func:`napari_lrp.metrics.measure` (plus ``*_sd`` for draws).
    """
    spread = exp.coefficient_spread(view.filter, view.tau_r, view.tau_x)
    if spread is not None:
        return spread
    mask = input_mask(exp.input_image, view.tau_x) if image_mask is None else image_mask
    return measure(relevance, exp.input_image, exp.case.ground_truth, exp.modalities, view.tau_r, view.tau_x,
                   image_mask=mask)


@dataclass(frozen=True)
class ShownRun:
    """A run's relevance and coefficient table as shown under a view, computed with the run off the main thread."""

    explanation: object
    view: ShownView
    relevance: object
    table: object


@dataclass
class LayerState:
    """Per-viewer layer bookkeeping: updates waiting for a hidden layer to be shown, the case on screen."""

    pending: dict[int, dict] = field(default_factory=dict)
    watched: set[int] = field(default_factory=set)
    case_key: str | None = None
    radiological: bool = True
    guarded: bool = False
    #: what the one 2D relevance layer shows: 'sum' or a modality's name
    shown: str = "sum"
    #: one relevance layer per modality as well (on request; the selector then shows the sum)
    per_modality: bool = False
    #: the relevance last drawn: (R (C, Z, Y, X), modalities, case, percentile), for the selector and 3D
    drawn: tuple | None = None


@dataclass(frozen=True)
class RunPlan:
    """What a Run (or Load) must do first: ``load_path`` a folder to load ('' for the sample case, None to
    use ``case``, the case on screen)."""

    load_path: str | None
    case: object = None


class Session:
    """Per-viewer state. ``explanation_changed`` fires (main thread) when a run finishes; ``case_changed``
    when another case is on screen."""

    explanation_changed = Signal(object)
    case_changed = Signal(object)
    #: a dock needs a run of the case on screen (the action's name): the Relevance dock offers its Run
    run_requested = Signal(str)

    def __init__(self):
        self.case = None
        self.model = None
        self.model_key: tuple[str, str] | None = None
        self.explanation = None
        self.loaded_path: str | None = None
        self.relevance_shown = False
        #: {layer name: mean power} of the current explanation, computed with it off the main thread
        self.layer_power: dict | None = None
        #: the latest result of each other kind for the case held ('comparison', 'search'): cleared with it
        self.results: dict = {}
        #: how the relevance is shown and scored; None until a dock shows the coefficients
        self.view: ShownView | None = None
        #: the current run as shown under ``view``, computed in the run's worker
        self.shown: ShownRun | None = None
        self.layers = LayerState()

    # ---- decisions -------------------------------------------------------------------------
    def plan(self, typed_path: str, on_screen, reload: bool = False) -> RunPlan:
        """Which case a Run (or, with ``reload``, a Load) acts on.

        Parameters
        ----------
        typed_path : str
            The case-folder field ('' when empty).
        on_screen : Case or None
            The case read from the viewer's layers.
        reload : bool
            Load: the typed folder is loaded again even when it is the one loaded; without one, the case
            on screen is taken as it is, else sample case 1.

        Returns
        -------
        RunPlan
        """
        typed = typed_path if typed_path not in ("", ".") else ""
        if reload:
            if typed:
                return RunPlan(load_path=typed)
            return RunPlan(load_path=None, case=on_screen) if on_screen is not None else RunPlan(load_path="")
        if typed and typed != self.loaded_path:
            return RunPlan(load_path=typed)
        if on_screen is not None:
            if self.case is not None and case_key(self.case) == case_key(on_screen):
                return RunPlan(load_path=None, case=self.case)
            return RunPlan(load_path=None, case=on_screen)
        if typed:
            return RunPlan(load_path=typed)
        return RunPlan(load_path="")

    def reusable_model(self, path: str, device: str):
        """The loaded model when it is the one named (same path and device), else None."""
        return self.model if self.model is not None and self.model_key == (path, device) else None

    # ---- state changes (main thread) ------------------------------------------------------------
    def set_case(self, case, loaded_path: str | None = None) -> None:
        changed = self.case is None or case_key(self.case) != case_key(case)
        self.case = case
        if loaded_path is not None:
            self.loaded_path = loaded_path
        if changed:
            self._forget_results()
            self.case_changed.emit(case)

    def _forget_results(self) -> None:
        self.explanation = None
        self.layer_power = None
        self.shown = None
        self.results.clear()

    def screen_case_changed(self, key: str | None) -> None:
        """Another case is on screen (a sample opened, a folder dropped): every result of the case the session
        held is forgotten and every dock is told (``case_changed``), so nothing acts on the old case."""
        if self.case is not None and key is not None and case_key(self.case) == key:
            return
        self.case = None
        self.loaded_path = None
        self._forget_results()
        self.case_changed.emit(None)

    def case_on_screen(self, on_screen):
        """The case an action acts on: ``on_screen`` (the case read from the viewer's layers) when there is
        one, adopted by the session when it is another case than the one it holds; else the session's case."""
        if on_screen is None:
            return self.case
        if self.case is None or case_key(self.case) != case_key(on_screen):
            self.set_case(on_screen)
        return self.case

    def current_explanation(self, key_on_screen: str | None):
        """The latest run when it explains the case on screen (``key_on_screen``: its key read from the
        layers; None when no case layer is there), else None (a new case is on screen: the old run's
        results are forgotten)."""
        if key_on_screen is not None and (self.case is None or case_key(self.case) != key_on_screen):
            self.screen_case_changed(key_on_screen)
        exp = self.explanation
        if exp is None or (key_on_screen is not None and case_key(exp.case) != key_on_screen):
            return None
        return exp

    def set_model(self, model, path: str, device: str) -> None:
        self.model, self.model_key = model, (path, device)

    def set_explanation(self, exp) -> bool:
        """Make ``exp`` current; returns whether a listener (the Inclusivity widget) showed its relevance."""
        self.explanation = exp
        self.relevance_shown = False
        self.explanation_changed.emit(exp)
        return self.relevance_shown


_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def session_for(viewer) -> Session:
    """The session of a viewer (the real viewer or napari's public proxy of it give the same)."""
    viewer = getattr(viewer, "__wrapped__", viewer)
    s = _SESSIONS.get(viewer)
    if s is None:
        s = _SESSIONS[viewer] = Session()
    return s
