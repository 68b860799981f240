"""Which torch modules and functions the engine recognises, side by side: module types and the functional
operations caught inside ``forward`` methods ("Other operations").

Each row is one kind of operation; its module types and its functions sit on the same line, so a kind
added for modules is added for functions in the same place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ACTIVATION_TYPES", "ADD_FUNCTIONS", "ATTENTION_FUNCTIONS", "AVGPOOL_TYPES", "BATCHNORM_TYPES",
           "CONV3D_FUNCTIONS", "CONV_TYPES", "DIV_FUNCTIONS", "DROPOUT_TYPES", "INPLACE_TWINS", "LAYERNORM_FUNCTIONS",
           "LINEAR_MAP_FUNCTIONS", "LINEAR_TYPES", "MAXPOOL_FUNCTIONS", "MAXPOOL_TYPES", "MUL_FUNCTIONS",
           "MULTILINEAR_FUNCTIONS", "NORM_TYPES", "PAD_FUNCTIONS", "PASS_FUNCTIONS", "RMSNORM_TYPES",
           "ROUTING_FUNCTIONS", "SOFTMAX_FUNCTIONS", "SOFTMAX_TYPES", "SUB_FUNCTIONS", "TRANSPOSED_CONV_TYPES"]

# ---- linear maps with weights (rules: LRP-0, epsilon, gamma, alpha-beta, z-plus, z-box, flat, w-square)
TRANSPOSED_CONV_TYPES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d) + TRANSPOSED_CONV_TYPES
LINEAR_TYPES = (nn.Linear,) + CONV_TYPES
#: functions the engine runs on its own oneDNN kernels (see kernels.py); their modules are LINEAR_TYPES
CONV3D_FUNCTIONS = (torch.conv3d, torch.conv_transpose3d)

# ---- normalisation (folded into the layer before it, an affine map, or passed through)
BATCHNORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
NORM_TYPES = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.GroupNorm, nn.LayerNorm)
#: LayerNorm on tokens (AttnLRP): the centring is a linear map, the standard deviation is held constant
LAYERNORM_FUNCTIONS = frozenset({F.layer_norm})
#: RMSNorm: y = x w / rms(x) with rms held constant is element-wise, so relevance passes (AttnLRP)
RMSNORM_TYPES = (nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()

# ---- attention (AttnLRP, Achtibat et al. 2024; lrp.rules.Softmax): softmax linearised at its input, and
# products of activations (q k^T, att v) split uniformly with the epsilon rule; the CP-LRP preset holds the
# attention weights constant instead (Ali et al. 2022)
SOFTMAX_TYPES = (nn.Softmax,)
SOFTMAX_FUNCTIONS = frozenset({F.softmax, torch.softmax, torch.Tensor.softmax})
#: multilinear maps of their tensor operands (matrix products, einsum, functional linear): the epsilon rule,
#: relevance shared equally among the operands on the relevance path (a constant operand gets none)
MULTILINEAR_FUNCTIONS = frozenset({torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__,
                                   torch.Tensor.__rmatmul__, torch.bmm, torch.Tensor.bmm, torch.mm,
                                   torch.Tensor.mm, torch.einsum, F.linear, torch.mv, torch.Tensor.mv})

# ---- element-wise activations and dropout in eval: relevance passes unchanged
ACTIVATION_TYPES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
                    nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Softplus, nn.Hardswish, nn.Hardsigmoid,
                    nn.LogSoftmax) + RMSNORM_TYPES
DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
PASS_FUNCTIONS = frozenset({
    F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_, F.leaky_relu, F.leaky_relu_,
    F.elu, F.elu_, F.selu, F.celu, F.gelu, F.silu, F.mish, F.prelu, F.relu6, F.hardtanh, F.softplus,
    torch.sigmoid, torch.Tensor.sigmoid, torch.tanh, torch.Tensor.tanh, F.dropout, F.dropout1d, F.dropout2d,
    F.dropout3d, F.hardswish, F.hardsigmoid, torch.nn.functional.sigmoid, torch.nn.functional.tanh}
    | ({F.rms_norm} if hasattr(F, "rms_norm") else set()))
#: in-place activations and the out-of-place function the engine calls instead
INPLACE_TWINS = {F.relu_: F.relu, torch.relu_: F.relu, torch.Tensor.relu_: F.relu, F.leaky_relu_: F.leaky_relu,
                 F.elu_: F.elu}

# ---- max pooling: winner takes all
MAXPOOL_TYPES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
                 nn.AdaptiveMaxPool3d)
MAXPOOL_FUNCTIONS = frozenset({F.max_pool1d, F.max_pool2d, F.max_pool3d, F.adaptive_max_pool1d,
                               F.adaptive_max_pool2d, F.adaptive_max_pool3d, torch.max_pool1d, torch.max_pool2d,
                               torch.max_pool3d})

# ---- parameter-free linear maps (average pooling, interpolation): the default linear-map rule
AVGPOOL_TYPES = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
                 nn.AdaptiveAvgPool3d, nn.Upsample)
LINEAR_MAP_FUNCTIONS = frozenset({F.interpolate, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d,
                                  F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.upsample})

# ---- residual sums y = a + b (and a - b): split in proportion to the operands
ADD_FUNCTIONS = frozenset({torch.add, torch.Tensor.add, torch.Tensor.__add__, torch.Tensor.__radd__,
                           torch.Tensor.__iadd__, torch.Tensor.add_})
SUB_FUNCTIONS = frozenset({torch.sub, torch.Tensor.sub, torch.Tensor.__sub__, torch.Tensor.__isub__,
                           torch.Tensor.sub_})

# ---- products a * b (gates, squeeze-excitation, scaling) and division by a constant: the signal-take-all
# rule (lrp.engine: relevance to the signal operand, the gate held constant)
MUL_FUNCTIONS = frozenset({torch.mul, torch.multiply, torch.Tensor.mul, torch.Tensor.multiply, torch.Tensor.__mul__,
                           torch.Tensor.__rmul__, torch.Tensor.__imul__, torch.Tensor.mul_})
DIV_FUNCTIONS = frozenset({torch.div, torch.divide, torch.true_divide, torch.Tensor.div, torch.Tensor.divide,
                           torch.Tensor.__truediv__, torch.Tensor.__itruediv__, torch.Tensor.div_})

# ---- padding and filling (masked_fill): values are moved and new ones added or put in place of old ones;
# relevance that lands on the added values is absorbed (booked in the ledger by lrp.rules.Routing)
PAD_FUNCTIONS = frozenset({F.pad, torch.Tensor.masked_fill, torch.masked_fill})
#: fused attention softmax(q k^T * scale + mask) v: taken apart into the product and softmax rules
ATTENTION_FUNCTIONS = frozenset({F.scaled_dot_product_attention})

# ---- operations that only move, copy or select values: autograd routes relevance by index (and sums it
# where a value is used twice), so they need no rule. Anything else that acts on the relevance path without
# a rule is reported (lrp.engine: UnhandledOperationWarning).
ROUTING_FUNCTIONS = frozenset({
    torch.cat, torch.concat, torch.concatenate, torch.stack, torch.hstack, torch.vstack, torch.dstack,
    torch.Tensor.__getitem__, torch.Tensor.view, torch.Tensor.view_as, torch.Tensor.reshape,
    torch.Tensor.reshape_as, torch.reshape, torch.Tensor.permute, torch.permute, torch.Tensor.transpose,
    torch.transpose, torch.Tensor.t, torch.t, torch.Tensor.flatten, torch.flatten, torch.Tensor.unflatten,
    torch.unflatten, torch.Tensor.squeeze, torch.squeeze, torch.Tensor.unsqueeze, torch.unsqueeze,
    torch.Tensor.contiguous, torch.Tensor.clone, torch.clone, torch.Tensor.to, torch.Tensor.type,
    torch.Tensor.float, torch.Tensor.double, torch.Tensor.half, torch.Tensor.bfloat16, torch.Tensor.narrow,
    torch.narrow, torch.Tensor.select, torch.select, torch.Tensor.split, torch.split, torch.Tensor.chunk,
    torch.chunk, torch.Tensor.unbind, torch.unbind, torch.Tensor.expand, torch.Tensor.expand_as,
    torch.Tensor.repeat, torch.Tensor.repeat_interleave, torch.repeat_interleave, torch.Tensor.flip,
    torch.flip, torch.Tensor.roll, torch.roll, torch.Tensor.movedim, torch.movedim, torch.Tensor.swapaxes,
    torch.swapaxes, torch.Tensor.swapdims, torch.Tensor.moveaxis, torch.moveaxis, torch.Tensor.tile,
    torch.tile, torch.Tensor.index_select, torch.index_select, torch.Tensor.gather, torch.gather,
    torch.Tensor.masked_select, torch.Tensor.cpu, torch.Tensor.cuda, torch.Tensor.detach,
    torch.Tensor.requires_grad_, F.pixel_shuffle, F.pixel_unshuffle, torch.as_tensor, torch.Tensor.as_strided,
})
