"""Attribution methods beside LRP, on the same segmentation target and the same case grid.

The target is LRP's: f(x) = sum over voxels and classes of W * network(x), W the start relevance's support
(the target class on the target region; every class and voxel for 'output'), so gradient x input of a
bias-free ReLU network is LRP-0 exactly. The methods are Captum's (``captum.attr``) on a
:class:`SegmentationTarget` module; ``METHODS`` is the registry (name -> :class:`Method`), in menu order.
Options use Captum's words (n_steps, baselines, stdevs, nt_samples, sliding_window_shapes, strides, ...).

Every method returns the attribution (1, C, Z, Y, X) on the model grid. Long methods report progress
through the target's forward calls (``progress(done, total)``, which may raise Cancelled) and run their
passes in chunks (``internal_batch_size``, ``nt_samples_batch_size``, ``perturbations_per_eval``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..io.case import Case
from ..lrp.engine import select_output
from ..lrp.kernels import onednn_convolutions
from ..lrp.ledger import Ledger
from ..lrp.targets import target_of
from ..lrp.types import ACTIVATION_TYPES
from ..models.card import Model
from ..models.preprocess import PreparedInput
from .result import Explanation
from .runs import RunRecord, RunSpec

__all__ = ["METHODS", "Method", "MethodRun", "SegmentationTarget", "register_method", "run_attribution",
           "run_method"]


class SegmentationTarget(nn.Module):
    """f(x) = sum(W * network(x)) per sample, shape (N,); W (1, K, Z, Y, X) broadcasts over the batch.

    progress(done, total) is called after every forward call with the samples scored so far (``total``:
    the method's expected count, or 0 when unknown) and may raise to cancel."""

    def __init__(self, network: nn.Module, weight: torch.Tensor, output_index=None,
                 progress: Callable[[int, int], None] | None = None, total: int = 0):
        super().__init__()
        self.network = network
        self.register_buffer("weight", weight, persistent=False)
        self.output_index = output_index
        self.progress, self.total, self.done = progress, total, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """f(x) = sum(W * network(x)) per sample.

        Parameters
        ----------
        x : torch.Tensor
            (N, C, Z, Y, X), a batch of inputs (Captum's perturbed or interpolated samples).

        Returns
        -------
        torch.Tensor
            (N,).
        """
        out = select_output(self.network(x), self.output_index, type(self.network).__name__)
        y = (out * self.weight).flatten(1).sum(1)
        self.done += x.shape[0]
        if self.progress is not None:
            self.progress(self.done, self.total)
        return y


@dataclass(frozen=True)
class Method:
    """A registered method: ``run(target, x, **options)`` -> attribution like x; ``passes(x, options)`` the
    number of samples it scores (for progress); ``description`` for menus and help; ``unit`` the unit of its
    values (what a colour bar says): the target score's ('logit') where the map sums or scales to it."""

    name: str
    run: Callable
    passes: Callable
    description: str
    unit: str = "logit"


_REGISTRY: dict[str, Method] = {}
METHODS = MappingProxyType(_REGISTRY)


def register_method(method: Method) -> None:
    """Add (or replace) a method in :data:`METHODS` (``explain(method=name)`` and the Compare dock list it).

    Parameters
    ----------
    method : Method
        Its name, run, passes and description.
    """
    _REGISTRY[method.name] = method


def _gradient(f, x):
    from captum.attr import Saliency

    return Saliency(f).attribute(x, abs=False)


def _gradient_x_input(f, x):
    from captum.attr import InputXGradient

    return InputXGradient(f).attribute(x)


def blurred(x: torch.Tensor, size: int = 5) -> torch.Tensor:
    """x smoothed by a size^3 box filter (edges replicated): the 'blurred' baseline.

    Parameters
    ----------
    x : torch.Tensor
        (N, C, Z, Y, X).
    size : int
        The box's edge in voxels.

    Returns
    -------
    torch.Tensor
    """
    p = size // 2
    return F.avg_pool3d(F.pad(x, (p,) * 6, mode="replicate"), size, stride=1)


def _baseline(x, baselines):
    if isinstance(baselines, str):
        if baselines == "zero":
            return torch.zeros_like(x)
        if baselines == "blurred":
            return blurred(x)
        raise ValueError(f"baselines must be 'zero', 'blurred', a number or a tensor like x, not {baselines!r}")
    return torch.as_tensor(baselines, dtype=x.dtype, device=x.device).expand_as(x)


def _integrated_gradients(f, x, n_steps: int = 32, baselines="zero", method: str = "gausslegendre",
                          internal_batch_size: int | None = 4):
    from captum.attr import IntegratedGradients

    return IntegratedGradients(f).attribute(x, baselines=_baseline(x, baselines), n_steps=int(n_steps),
                                            method=method, internal_batch_size=internal_batch_size)


def _smoothgrad(f, x, nt_samples: int = 10, stdevs: float = 0.15, nt_samples_batch_size: int | None = 4):
    """SmoothGrad of the gradient; ``stdevs``: the noise sd as a fraction of the input's range (max - min)."""
    from captum.attr import NoiseTunnel, Saliency

    sd = float(stdevs) * float(x.detach().max() - x.detach().min())
    return NoiseTunnel(Saliency(f)).attribute(x, nt_type="smoothgrad", nt_samples=int(nt_samples), stdevs=sd,
                                              nt_samples_batch_size=nt_samples_batch_size, abs=False)


def _guided_backprop(f, x):
    from captum.attr import GuidedBackprop

    other = sorted({type(m).__name__ for m in f.network.modules()
                    if isinstance(m, ACTIVATION_TYPES) and type(m) is not nn.ReLU})
    if other:
        raise ValueError(f"guided backpropagation (Captum's) modifies nn.ReLU modules only; this network also has "
                         f"{', '.join(other)}, whose gradients would pass unguided: use another method")
    return GuidedBackprop(f).attribute(x)


def _module_named(network: nn.Module, layer: str) -> nn.Module:
    modules = dict(network.named_modules())
    if layer not in modules or not layer:
        raise ValueError(f"gradcam needs layer=<module name>; {layer!r} is not one (some: "
                         f"{', '.join(n for n in list(modules)[1:8])}, ...)")
    return modules[layer]


def _gradcam(f, x, layer: str | None = None):
    """Grad-CAM (Selvaraju et al. 2017) in 3D at ``layer``: relu(sum_k mean(df/dA_k) A_k), trilinearly
    upsampled to the input grid; every input channel gets 1/C of it (Grad-CAM has no channel axis)."""
    from captum.attr import LayerAttribution, LayerGradCam

    if layer is None:
        raise ValueError("gradcam needs layer=<module name> (e.g. the last encoder block)")
    cam = LayerGradCam(f, _module_named(f.network, layer)).attribute(x, relu_attributions=True)
    if cam.shape[2:] != x.shape[2:]:
        cam = LayerAttribution.interpolate(cam, tuple(x.shape[2:]), interpolate_mode="trilinear")
    return (cam / x.shape[1]).expand_as(x).contiguous()


def _occlusion_window(x, sliding_window_shapes):
    return tuple(int(v) for v in (sliding_window_shapes or (1, 4, 8, 8)))


def _occlusion(f, x, sliding_window_shapes=None, strides=None, baselines=0.0, perturbations_per_eval: int = 4):
    from captum.attr import Occlusion

    win = _occlusion_window(x, sliding_window_shapes)
    return Occlusion(f).attribute(x, sliding_window_shapes=win, strides=tuple(strides) if strides else win,
                                  baselines=float(baselines), perturbations_per_eval=int(perturbations_per_eval))


def _occlusion_passes(x, options):
    win = _occlusion_window(x, options.get("sliding_window_shapes"))
    strides = tuple(options.get("strides") or win)
    dims = x.shape[1:]
    return 1 + math.prod((d - w) // s + 1 for d, w, s in zip(dims, win, strides))


register_method(Method("gradient", _gradient, lambda x, o: 1, "the input gradient of the target (saliency)",
                       "logit per intensity unit"))
register_method(Method("gradient_x_input", _gradient_x_input, lambda x, o: 1,
                       "gradient x input (equals LRP-0 on bias-free ReLU networks)"))
register_method(Method("integrated_gradients", _integrated_gradients, lambda x, o: int(o.get("n_steps", 32)),
                       "integrated gradients from a baseline (zero or blurred), n_steps"))
register_method(Method("smoothgrad", _smoothgrad, lambda x, o: int(o.get("nt_samples", 10)),
                       "the gradient averaged over noisy copies (nt_samples, stdevs of the input range)",
                       "logit per intensity unit"))
register_method(Method("guided_backprop", _guided_backprop, lambda x, o: 1,
                       "guided backpropagation (networks with nn.ReLU activations)", "a.u."))
register_method(Method("gradcam", _gradcam, lambda x, o: 1, "Grad-CAM at a layer (layer=<module name>), upsampled",
                       "a.u."))
register_method(Method("occlusion", _occlusion, _occlusion_passes,
                       "the target's drop when 3D patches are occluded (sliding_window_shapes, strides)"))


#: forward/backward passes one attribution may take unless the caller raises it (``max_passes=``)
MAX_PASSES = 10_000


def _check_options(name: str, x: torch.Tensor, options: dict) -> int:
    """Refuse option values that would fail inside Captum or run without bound; returns the passes."""
    for key in ("n_steps", "nt_samples", "perturbations_per_eval", "internal_batch_size", "nt_samples_batch_size"):
        v = options.get(key)
        if v is not None and (isinstance(v, bool) or not float(v).is_integer() or int(v) < 1):
            raise ValueError(f"{name}: option {key}={v!r} must be a whole number >= 1")
    if name == "occlusion":
        dims = tuple(x.shape[1:])
        win = _occlusion_window(x, options.get("sliding_window_shapes"))
        strides = tuple(options.get("strides") or win)
        if len(win) != len(dims) or any(w < 1 or w > d for w, d in zip(win, dims)):
            raise ValueError(f"occlusion: sliding_window_shapes {win} must be (C, Z, Y, X) sizes between 1 and the "
                             f"input's {dims}")
        if len(strides) != len(dims) or any(int(st) < 1 for st in strides):
            raise ValueError(f"occlusion: strides {strides} must be (C, Z, Y, X) whole numbers >= 1")
    passes = int(METHODS[name].passes(x, options))
    limit = int(options.pop("max_passes", MAX_PASSES))
    if passes > limit:
        raise ValueError(f"{name}: these options take about {passes:,} passes of the network (more than {limit:,}); "
                         "choose fewer steps, samples or larger occlusion strides, or pass max_passes= to allow it")
    return passes


def run_method(name: str, network: nn.Module, x: torch.Tensor, weight: torch.Tensor, options: dict | None = None,
               output_index=None, progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """The attribution of one method for f(x) = sum(weight * network(x)).

    The network runs in eval mode with its parameters frozen (restored after).

    Parameters
    ----------
    name : str
        A name of :data:`METHODS`.
    network : torch.nn.Module
        The network.
    x : torch.Tensor
        (1, C, Z, Y, X) model-grid input.
    weight : torch.Tensor
        (1, K, Z, Y, X): the target's weights on the outputs.
    options : dict, optional
        The method's options in Captum's words.
    output_index : int or str, optional
        The segmentation output of a network with several.
    progress : callable(done, total), optional
        Called as samples are scored; may raise to cancel.

    Returns
    -------
    torch.Tensor
        (1, C, Z, Y, X).
    """
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose lrp or one of {', '.join(METHODS)}")
    method = METHODS[name]
    options = dict(options or {})
    passes = _check_options(name, x, options)
    f = SegmentationTarget(network, weight.to(x.dtype), output_index, progress, passes)
    training = network.training
    frozen = [p for p in network.parameters() if p.requires_grad]
    try:
        network.eval()
        for p in frozen:
            p.requires_grad_(False)
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")  # Captum's notice
            try:
                out = method.run(f, x.detach().clone().requires_grad_(True), **options)
            except TypeError as exc:
                raise TypeError(f"{name}: {exc} (options: {', '.join(options) or 'none'})") from None
    finally:
        for p in frozen:
            p.requires_grad_(True)
        network.train(training)
    return out.detach()


@dataclass
class MethodRun(RunRecord):
    """A run of another attribution method: its map on the case grid; only the 'input' (heatmap) filter
    applies, since the layer filters act inside LRP's backward pass."""

    method: str
    options: dict
    attribution: np.ndarray
    start: float

    def explanation(self, filters: dict, keep=None, progress=None) -> Explanation:
        layer_filters = [k for k in filters if k != "input"]
        if layer_filters:
            raise ValueError(f"{self.method} has no backward pass through the layers, so only the 'input' filter "
                             f"applies; got filters for {', '.join(map(str, layer_filters))} (layer filters are LRP's)")
        rel = filters["input"](self.attribution[None])[0] if "input" in filters else self.attribution
        ledger = Ledger(start=self.start, end=float(rel.sum(dtype=np.float64)))
        return self.explanation_of(rel, self.attribution, filters, ledger, method=self.method,
                                   method_options=dict(self.options))


def run_attribution(m: Model, case: Case, prep: PreparedInput, spec: RunSpec, method: str, options: dict,
                    progress: Callable[[int, int], None] | None = None) -> MethodRun:
    """Method ``method`` on LRP's target of ``spec``, mapped to the case grid.

    Parameters
    ----------
    m, case, prep, spec : Model, Case, PreparedInput, RunSpec
        The model, the case, its model-grid input; target, class and output index (preset and rules
        are LRP's and unused here).
    method : str
        A name of :data:`METHODS`.
    options : dict
        The method's options in Captum's words.
    progress : callable(done, total), optional
        Called as the method scores samples.

    Returns
    -------
    MethodRun
    """
    param = next(prep.network.parameters(), None)
    x = prep.x if param is None else prep.x.to(device=param.device, dtype=param.dtype)
    with torch.no_grad(), onednn_convolutions():
        out = select_output(prep.network(x), spec.output_index, type(prep.network).__name__)
    logits = prep.crop(out)
    m.check_outputs(int(logits.shape[1]))
    target, cls = spec.target, spec.target_class
    prediction, mask = target_of(logits, m.card.output_activation, target, cls,
                                 lambda: m.card.class_ground_truth(case, cls), case.name)
    weight = torch.ones_like(logits) if mask is None else torch.zeros_like(logits)
    if mask is not None:
        weight[:, cls] = torch.as_tensor(np.ascontiguousarray(mask), device=logits.device, dtype=logits.dtype)
        if getattr(target, "against", None) is not None:  # a contrast: the other class's logit counts against
            weight[:, target.against] = -weight[:, cls]
    weight = prep.pad(weight)
    attribution = run_method(method, prep.network, x, weight, options, spec.output_index, progress)
    rel = prep.crop(attribution)[0].float().cpu().numpy()
    return MethodRun(prepared=prep, case=case, model=m, spec=spec, logits=logits[0].float().cpu().numpy(),
                     prediction=prediction, method=method, options=dict(options),
                     attribution=np.ascontiguousarray(rel, dtype=np.float32),
                     start=float((weight * out).sum(dtype=torch.float64)))
