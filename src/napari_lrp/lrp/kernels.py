"""Convolution kernels for the engine: the same maps as ``F.conv3d`` / ``F.conv_transpose3d``, run by
oneDNN on the CPU.

Why: PyTorch picks its CPU convolution kernel with a rule made for 2D images (oneDNN only when
N*C*D*H > 20480, for a 3D input; otherwise an im2col kernel). For the volumes of this package that rule
sends most U-Net layers to the im2col kernel, 2-10x slower than oneDNN (measured on
``benchmarks/lrp_speed.py`` shapes, e.g. a 6 -> 16 channel 3x3x3 convolution on 19x96x96: 71.5 ms
against 6.6 ms, its input gradient 90.5 ms against 8.5 ms). Here:

- a convolution runs through ``torch.mkldnn_convolution`` directly;
- a stride-1 transposed convolution (the input gradient of a stride-1 convolution) is the convolution
  with the flipped, transposed kernel and padding d (k - 1) - p, except when it has fewer than 16
  output channels and torch's rule already picks oneDNN's transposed kernel, which is faster there
  (32 -> 6 channels on 19x192x192: 99 against 158 ms; the first layer's input gradient);
- a transposed convolution with kernel = stride and no padding (the U-Net up-convolution) is a matrix
  product and an interleaving copy;
- any other transposed convolution is torch's (measured: permuting axes or channels-last layouts
  cost more in copies than they save).

Anything else (float64, CUDA/MPS, other padding modes, 1D/2D) goes to the plain torch function
unchanged. Results equal the torch functions up to float32 rounding (a different summation order).
:func:`onednn_convolutions` applies the same kernels, with an input gradient that uses them too, to any
code in its ``with`` block (used by ``benchmarks/lrp_speed.py`` for a kernel-matched gradient pass).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["conv3d", "conv_transpose3d", "conv3d_input", "onednn_convolutions"]

#: PyTorch's own rule (ATen ConvUtils.h, use_mkldnn) takes oneDNN for a CPU float32 3D input with
#: N*C*D*H above this
TORCH_ONEDNN_MIN = 20480


def _triple(v) -> list[int] | None:
    if isinstance(v, str):
        return None
    if isinstance(v, int):
        return [v] * 3
    v = [int(i) for i in v]
    return v * 3 if len(v) == 1 else v


def _onednn(x: torch.Tensor, w: torch.Tensor) -> bool:
    return (x.ndim == 5 and w.ndim == 5 and x.device.type == "cpu" and x.dtype == torch.float32
            and w.dtype == torch.float32 and torch.backends.mkldnn.is_available()
            and torch.backends.mkldnn.enabled and not x.is_mkldnn)


def conv3d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1, padding=0,
           dilation=1, groups: int = 1) -> torch.Tensor:
    """``F.conv3d`` (zeros padding), through oneDNN for CPU float32.

    Parameters
    ----------
    x : torch.Tensor
        (N, C, D, H, W).
    weight : torch.Tensor
        (C_out, C / groups, kD, kH, kW).
    bias : torch.Tensor, optional
        (C_out,).
    stride, padding, dilation : int or tuple of int
        As for ``F.conv3d``.
    groups : int
        Channel groups.

    Returns
    -------
    torch.Tensor
        (N, C_out, D', H', W'), equal to torch's to float32 rounding.
    """
    pad, st, dil = _triple(padding), _triple(stride), _triple(dilation)
    if pad is None or not _onednn(x, weight) or (bias is not None and bias.dtype != torch.float32):
        return F.conv3d(x, weight, bias, stride, padding, dilation, groups)
    return torch.mkldnn_convolution(x.contiguous(), weight.contiguous(), bias, pad, st, dil, groups)


def _transposed_as_conv_weight(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """Kernel of the convolution equal to a stride-1 transposed convolution: (Cin/g... ) flipped."""
    cin, cout_g = weight.shape[0], weight.shape[1]
    k = weight.shape[2:]
    w = weight.reshape(groups, cin // groups, cout_g, *k).transpose(1, 2).reshape(groups * cout_g,
                                                                                   cin // groups, *k)
    return w.flip(2, 3, 4)


def conv_transpose3d(v: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1,
                     padding=0, output_padding=0, groups: int = 1, dilation=1) -> torch.Tensor:
    """``F.conv_transpose3d``, through oneDNN for CPU float32.

    Parameters
    ----------
    v, weight, bias : torch.Tensor
        The input (N, C, D, H, W), the kernel (C, C_out / groups, kD, kH, kW) and the bias (C_out,) or None.
    stride, padding, output_padding, dilation : int or tuple of int
        As for ``F.conv_transpose3d``.
    groups : int
        Channel groups.

    Returns
    -------
    torch.Tensor
    """
    st, pad, opad, dil = _triple(stride), _triple(padding), _triple(output_padding), _triple(dilation)
    if pad is None or not _onednn(v, weight) or (bias is not None and bias.dtype != torch.float32):
        return F.conv_transpose3d(v, weight, bias, stride, padding, output_padding, groups, dilation)
    k = list(weight.shape[2:])
    if k == st and pad == [0, 0, 0] and opad == [0, 0, 0] and dil == [1, 1, 1] and groups == 1:
        return _upsampling_transpose(v, weight, bias)
    few_outputs = weight.shape[1] * groups < 16 and v.shape[0] * v.shape[1] * v.shape[2] * v.shape[3] > TORCH_ONEDNN_MIN
    if st == [1, 1, 1] and opad == [0, 0, 0] and all(p <= d * (kk - 1) for p, d, kk in zip(pad, dil, k)) and \
            not few_outputs:
        return conv3d(v, _transposed_as_conv_weight(weight, groups), bias, 1,
                      [d * (kk - 1) - p for p, d, kk in zip(pad, dil, k)], dil, groups)
    return F.conv_transpose3d(v, weight, bias, st, pad, opad, groups, dil)


def _upsampling_transpose(v: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Transposed convolution with kernel = stride (the U-Net up-convolution): the blocks do not overlap,
    so it is one matrix product (k-volume * out channels, in channels) x (in channels, voxels) and an
    interleaving copy; 2.2x faster than torch's kernel (2x2x2, 32 -> 32 channels, 9x96x96: 87 against
    198 ms)."""
    n, ci, d, h, w = v.shape
    co, (kd, kh, kw) = weight.shape[1], weight.shape[2:]
    wm = weight.reshape(ci, co * kd * kh * kw).t()
    y = torch.matmul(wm, v.reshape(n, ci, d * h * w))  # (n, co * kd * kh * kw, voxels)
    y = y.view(n, co, kd, kh, kw, d, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(n, co, d * kd, h * kh, w * kw)
    return y if bias is None else y.add_(bias.view(1, -1, 1, 1, 1))


def conv3d_input(input_shape, weight: torch.Tensor, v: torch.Tensor, stride=1, padding=0, dilation=1,
                 groups: int = 1) -> torch.Tensor:
    """J^T v of :func:`conv3d` with ``weight`` at an input of a given shape (the transposed convolution of v).

    Like ``torch.nn.grad.conv3d_input``.

    Parameters
    ----------
    input_shape : tuple of int
        The convolution's input shape (N, C, D, H, W).
    weight : torch.Tensor
        The kernel.
    v : torch.Tensor
        A tensor shaped like the convolution's output.
    stride, padding, dilation, groups
        The convolution's.

    Returns
    -------
    torch.Tensor
        Shaped ``input_shape``.
    """
    st, pad, dil = _triple(stride), _triple(padding), _triple(dilation)
    k = weight.shape[2:]
    opad = [int(input_shape[2 + i]) - ((v.shape[2 + i] - 1) * st[i] - 2 * pad[i] + dil[i] * (k[i] - 1) + 1)
            for i in range(3)]
    return conv_transpose3d(v, weight, None, st, pad, opad, groups, dil)


class _Conv3dFn(torch.autograd.Function):
    """conv3d whose input gradient uses :func:`conv3d_input` (weight and bias gradients: torch's)."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):
        ctx.save_for_backward(x, weight, bias)
        ctx.args = (stride, padding, dilation, groups)
        return conv3d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, g):
        x, weight, bias = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.args
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = conv3d_input(x.shape, weight, g, stride, padding, dilation, groups)
        if ctx.needs_input_grad[1] or (bias is not None and ctx.needs_input_grad[2]):
            _, gw, gb = torch.ops.aten.convolution_backward(
                g, x, weight, None if bias is None else list(bias.shape), _triple(stride), _triple(padding),
                _triple(dilation), False, [0, 0, 0], groups, [False, ctx.needs_input_grad[1],
                                                              bias is not None and ctx.needs_input_grad[2]])
        return gx, gw, gb, None, None, None, None


_CONV3D_ARGS = (("input", None), ("weight", None), ("bias", None), ("stride", 1), ("padding", 0),
                ("dilation", 1), ("groups", 1))
_CONV_TRANSPOSE3D_ARGS = (("input", None), ("weight", None), ("bias", None), ("stride", 1), ("padding", 0),
                          ("output_padding", 0), ("groups", 1), ("dilation", 1))


def _bind(spec, args, kwargs) -> list:
    """Positional arguments of a ``torch.conv3d``/``torch.conv_transpose3d`` call, defaults filled in."""
    values = list(args) + [default for _name, default in spec[len(args):]]
    for i, (name, _default) in enumerate(spec):
        if name in kwargs:
            values[i] = kwargs[name]
    return values


def run_on_kernels(func, args, kwargs):
    """``func(*args, **kwargs)``: ``torch.conv3d`` and ``torch.conv_transpose3d`` on this module's kernels.

    For a TorchFunctionMode; other functions run unchanged.

    Parameters
    ----------
    func : callable
        The torch function called.
    args, kwargs
        Its arguments.

    Returns
    -------
    object
        What ``func`` returns.
    """
    if func is torch.conv3d:
        return conv3d(*_bind(_CONV3D_ARGS, args, kwargs))
    if func is torch.conv_transpose3d:
        return conv_transpose3d(*_bind(_CONV_TRANSPOSE3D_ARGS, args, kwargs))
    return func(*args, **(kwargs or {}))


class _OneDNNConvolutions(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.conv3d:
            bound = _bind(_CONV3D_ARGS, args, kwargs)
            if _triple(bound[4]) is not None and _onednn(bound[0], bound[1]):
                return _Conv3dFn.apply(*bound)
            return func(*args, **kwargs)
        return run_on_kernels(func, args, kwargs)


@contextlib.contextmanager
def onednn_convolutions():
    """Within the block, every ``F.conv3d``/``F.conv_transpose3d`` call runs on the kernels of this module
    (CPU float32; anything else unchanged), the input gradient of ``conv3d`` included."""
    with _OneDNNConvolutions():
        yield
