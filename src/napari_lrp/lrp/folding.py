"""BatchNorm folding: an eval BatchNorm right after a linear layer is folded into it.

The layer's rule then sees W' = s W and b' = s (b - mean) + beta with s = gamma / sqrt(var + eps), and the
BatchNorm's output; the BatchNorm itself passes relevance. This is zennit's SequentialMergeBatchNorm
canonizer done while the forward pass runs, without touching the model.

A linear layer's rule is prepared only once it is known whether a BatchNorm reads its output: the layer
is *pending* until the next leaf module runs (:meth:`BatchNormFolding.flush`), or until a BatchNorm claims
it (:meth:`claim`, then :meth:`fold` when the BatchNorm has run).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from .types import TRANSPOSED_CONV_TYPES

__all__ = ["BatchNormFolding", "foldable"]


def foldable(layer: nn.Module, z: torch.Tensor | None, bn: nn.Module) -> bool:
    """Whether a BatchNorm reading a layer's output can be folded into that layer.

    It needs running statistics, one statistic per output channel, and no grouped transposed convolution.

    Parameters
    ----------
    layer : torch.nn.Module
        The linear layer.
    z : torch.Tensor or None
        Its output.
    bn : torch.nn.Module
        The BatchNorm.

    Returns
    -------
    bool
    """
    if bn.running_mean is None or bn.running_var is None or z is None:
        return False
    if isinstance(layer, TRANSPOSED_CONV_TYPES) and layer.groups != 1:
        return False
    return z.ndim >= 2 and z.shape[1] == bn.running_mean.numel()


def folded_parameters(layer: nn.Module, bn: nn.Module) -> dict[str, torch.Tensor]:
    """The layer's parameters with a BatchNorm folded in: W' = s W, b' = s (b - mean) + beta (detached).

    Parameters
    ----------
    layer : torch.nn.Module
        The linear layer.
    bn : torch.nn.Module
        The eval BatchNorm after it.

    Returns
    -------
    dict[str, torch.Tensor]
        {'weight': W', 'bias': b'}.
    """
    s = torch.rsqrt(bn.running_var.detach() + bn.eps)
    if bn.affine:
        s = s * bn.weight.detach()
    w = layer.weight.detach()
    shape = [1] * w.ndim
    shape[1 if isinstance(layer, TRANSPOSED_CONV_TYPES) else 0] = -1
    b = layer.bias.detach() if layer.bias is not None else torch.zeros_like(bn.running_mean)
    bias = (b - bn.running_mean.detach()) * s
    if bn.affine:
        bias = bias + bn.bias.detach()
    return {"weight": w * s.view(shape), "bias": bias}


@dataclass
class BatchNormFolding:
    """Pending linear layers and the BatchNorms folded into them, for one forward pass.

    ``prepare(entry, override)`` is the engine's callback that prepares an entry's rule (``override``:
    None, or the folded {'weight', 'bias'}); entries carry ``module``, ``x``, ``z`` and ``name``.
    """

    prepare: Callable[[object, dict | None, torch.Tensor | None], None]
    #: (layer, BatchNorm) name pairs folded together, in forward order
    folded: list[tuple[str, str]] = field(default_factory=list)
    _pending: dict[int, tuple[torch.Tensor, object]] = field(default_factory=dict)
    _claimed: dict[str, object] = field(default_factory=dict)

    def defer(self, out: torch.Tensor, entry) -> None:
        """Hold a layer's rule until it is known whether a BatchNorm follows.

        Parameters
        ----------
        out : torch.Tensor
            The layer's output.
        entry : object
            The engine's entry of the layer.
        """
        self._pending[id(out)] = (out, entry)

    def alias(self, old: torch.Tensor, new: torch.Tensor) -> None:
        """Let ``new`` (an identity tap of ``old``) stand for ``old`` when a BatchNorm reads it.

        Parameters
        ----------
        old, new : torch.Tensor
            The layer's output and its tap.
        """
        hit = self._pending.get(id(old))
        if hit is not None:
            self._pending[id(new)] = (new, hit[1])

    def claim(self, bn_name: str, bn: nn.Module, x) -> bool:
        """Before a BatchNorm runs: fold it into the pending layer that produced its input, if possible.

        Parameters
        ----------
        bn_name : str
            The BatchNorm's module name.
        bn : torch.nn.Module
            The BatchNorm.
        x : torch.Tensor
            Its input.

        Returns
        -------
        bool
            Whether it was claimed (folded).
        """
        hit = self._pending.get(id(x)) if isinstance(x, torch.Tensor) else None
        if hit is None or not foldable(hit[1].module, hit[1].z, bn):
            return False
        entry = hit[1]
        self._claimed[bn_name] = entry
        for key in [k for k, (_t, e) in self._pending.items() if e is entry]:
            del self._pending[key]
        return True

    def is_claimed(self, bn_name: str) -> bool:
        """Whether a BatchNorm was folded into its layer.

        Parameters
        ----------
        bn_name : str
            The BatchNorm's module name.

        Returns
        -------
        bool
        """
        return bn_name in self._claimed

    def fold(self, bn_name: str, bn: nn.Module, y: torch.Tensor) -> None:
        """After a claimed BatchNorm ran: prepare its layer's rule with the folded weights and its output as z.

        Parameters
        ----------
        bn_name, bn
            As for :meth:`claim`.
        y : torch.Tensor
            Its output.
        """
        entry = self._claimed.pop(bn_name)
        self.prepare(entry, folded_parameters(entry.module, bn), y.detach())
        self.folded.append((entry.name, bn_name))

    def flush(self) -> None:
        """Prepare every pending layer that no BatchNorm follows directly."""
        done = set()
        for _t, entry in list(self._pending.values()):
            if id(entry) not in done:
                done.add(id(entry))
                self.prepare(entry, None, None)
        self._pending.clear()
