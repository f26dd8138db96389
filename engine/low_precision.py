"""Frozen base weights kept in less memory: float8 storage (model.fp8_base) and 4-bit NF4 (model.nf4_base).

fp8, as kohya's ``--fp8_base``: each frozen Linear keeps its weight as ``torch.float8_e4m3fn`` (1 byte
a weight instead of 2) and upcasts it to the training dtype inside its forward, so the matmul runs in
bf16/fp16 as before; only the stored values are rounded. sd-scripts casts the whole model and leans on
autocast to upcast; converting the Linears alone does the same for the weights that matter (the
Linears hold nearly all of Flux's, CLIP's and T5's bytes) while embeddings and norms stay in the
training dtype, as sd-scripts keeps them for the text encoders. The upcast is explicit, so it works
with or without autocast and on the CPU.

NF4: bitsandbytes' ``Linear4bit`` (quant_type "nf4", 4 bits a weight plus a scale per 64), computing
in bf16. peft wraps both kinds of layer with its LoRA: Fp8Linear is an ``nn.Linear``, and Linear4bit
goes through peft's bitsandbytes LoRA layer. The LoRA factors themselves are never stored in low
precision: the training loop keeps them float32.

Order in a run: cast the model to the training dtype first, with :func:`cast_keeping_fp8` (a plain
``module.to(dtype)`` would turn float8 weights back into bf16: both those loaded from an fp8 file and
those stored here), then store in fp8/NF4, then attach the LoRA.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn

from engine.model_loading import first_line

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8_DTYPE).max  # 448: e4m3fn has no infinity, so larger values are clamped, not NaN

NF4_BLOCK = 64  # bitsandbytes' default 4-bit block: one scale for each 64 weights

# Feed-forward blocks of transformers' T5 that cast their input to ``wo``'s weight dtype (see below).
_T5_FEED_FORWARD = ("T5DenseGatedActDense", "T5DenseActDense")


class Fp8Linear(nn.Linear):
    """A frozen Linear whose weight is stored as float8_e4m3fn and computed in ``compute_dtype``."""

    # peft reads ``compute_dtype`` (as it does on bitsandbytes layers) to choose the dtype of the LoRA it
    # adds; without it, it would give the LoRA the weight's dtype: float8.
    compute_dtype: torch.dtype

    @classmethod
    def from_linear(cls, linear: nn.Linear, compute_dtype: torch.dtype) -> Fp8Linear:
        with torch.device("meta"):  # no throwaway allocation: the parameters are replaced just below
            layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None)
        layer.compute_dtype = compute_dtype
        weight = linear.weight.detach()
        if weight.dtype != FP8_DTYPE:  # a weight loaded as float8 is kept as it is
            weight = weight.clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
        layer.weight = nn.Parameter(weight, requires_grad=False)
        if linear.bias is not None:
            # The bias is tiny; it stays in the training dtype, so only the weight is rounded.
            layer.bias = nn.Parameter(linear.bias.detach().to(compute_dtype), requires_grad=False)
        layer.train(linear.training)
        return layer

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(self.compute_dtype)
        return _Fp8Matmul.apply(input.to(self.compute_dtype), self.weight, bias, self.compute_dtype)


class _Fp8Matmul(torch.autograd.Function):
    """``input @ weight.T + bias`` with a frozen float8 ``weight``, upcast for the forward and again for the
    backward. Through F.linear, autograd would keep the upcast copy from the forward to the backward: a bf16
    copy of every weight of a block alive at once, twice fp8's bytes, which is the memory fp8 is meant to
    save. Only the float8 weight is kept here (the weight and the bias are frozen: no gradient for them)."""

    @staticmethod
    def forward(ctx, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype):
        ctx.save_for_backward(weight)
        ctx.dtype = dtype
        return F.linear(input, weight.to(dtype), bias)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (weight,) = ctx.saved_tensors
        return grad_output.to(ctx.dtype) @ weight.to(ctx.dtype), None, None, None


def cast_keeping_fp8(module: nn.Module, dtype: torch.dtype) -> None:
    """``module.to(dtype=dtype)``, except for float8 tensors, which keep their storage: weights loaded as
    float8 from an fp8 file (flux1-dev-fp8, t5xxl_fp8_e4m3fn) for model.fp8_base, which a plain cast
    would expand to bf16 and store_in_fp8 would then round back."""
    for tensor in [*module.parameters(), *module.buffers()]:
        if tensor.is_floating_point() and tensor.dtype not in (dtype, FP8_DTYPE):
            tensor.data = tensor.data.to(dtype)


def store_in_fp8(module: nn.Module, compute_dtype: torch.dtype) -> int:
    """Store every frozen base Linear of ``module`` in float8 (see the module docstring); returns how
    many layers were converted. LoRA layers (peft's lora_A/lora_B) are left as they are, so this may
    run before or after attach_lora; the converted weights are frozen."""
    if not compute_dtype.is_floating_point or compute_dtype == FP8_DTYPE:
        raise ValueError(f"fp8 weights need a float compute dtype such as bfloat16, not {compute_dtype}")
    converted = _replace_linears(module, lambda linear: Fp8Linear.from_linear(linear, compute_dtype))
    for child in module.modules():
        if type(child).__name__ in _T5_FEED_FORWARD and isinstance(child.wo, Fp8Linear):
            child.forward = types.MethodType(_t5_feed_forward_in_compute_dtype, child)
    return converted


def _t5_feed_forward_in_compute_dtype(self: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    """transformers' T5 feed-forward, without its cast of the activations to ``wo.weight.dtype`` (there
    so that 8-bit T5 keeps ``wo`` in float32): with float8 storage that cast would round every activation
    to float8. sd-scripts patches T5's gated feed-forward the same way for --fp8_base."""
    if hasattr(self, "wi_0"):  # T5 v1.1 (T5-XXL): gated GELU
        hidden_states = self.act(self.wi_0(hidden_states)) * self.wi_1(hidden_states)
    else:
        hidden_states = self.act(self.wi(hidden_states))
    return self.wo(self.dropout(hidden_states))


def _replace_linears(module: nn.Module, convert, fits=lambda linear: True) -> int:
    """Swap each plain base Linear of ``module`` that ``fits`` for ``convert(linear)`` in its parent;
    returns the count."""
    replacements = [
        (parent, child_name, child)
        for parent_name, parent in module.named_modules()
        if not _is_lora_part(parent_name)
        for child_name, child in parent.named_children()
        if _is_base_linear(child) and not child_name.startswith("lora_") and fits(child)
    ]
    for parent, child_name, linear in replacements:
        setattr(parent, child_name, convert(linear))
    return len(replacements)


def _is_lora_part(path: str) -> bool:
    return any(part.startswith("lora_") for part in path.split("."))


def _is_base_linear(layer: nn.Module) -> bool:
    """A Linear not yet stored in low precision (peft's own LoRA wrapper is no Linear; its base_layer is)."""
    if isinstance(layer, Fp8Linear) or not isinstance(layer, nn.Linear):
        return False
    return not _is_4bit(layer)


def _is_4bit(layer: nn.Module) -> bool:
    return type(layer).__name__ in ("Linear4bit", "LinearNF4")


def nf4_available(device: torch.device | str = "cpu") -> str | None:
    """None when bitsandbytes can quantize to NF4 and run it on ``device``, else the reason in words.

    It is tried, not assumed: a 64x64 layer is quantized, run forwards and backwards on the device."""
    try:
        import bitsandbytes as bnb
    except Exception as exc:  # ImportError, or a library that fails while loading its native part
        return f"bitsandbytes cannot be imported ({first_line(exc)})"
    try:
        layer = _nf4_layer(bnb, nn.Linear(64, 64), torch.bfloat16, torch.device(device))
        probe = torch.ones(1, 64, dtype=torch.bfloat16, device=device, requires_grad=True)
        layer(probe).float().sum().backward()
    except Exception as exc:
        return f"bitsandbytes {bnb.__version__} cannot run NF4 on {device} ({first_line(exc)})"
    if probe.grad is None or not torch.isfinite(probe.grad).all():
        return f"bitsandbytes {bnb.__version__} gives no usable NF4 gradients on {device}"
    return None


def store_in_nf4(module: nn.Module, compute_dtype: torch.dtype, device: torch.device | str) -> int:
    """Replace the base Linears of ``module`` with bitsandbytes' NF4 Linear4bit, quantized on ``device``
    (where it then lives); returns how many layers were converted. Call nf4_available(device) first.

    A layer whose inputs are not a multiple of NF4_BLOCK stays as it is: bitsandbytes' CPU kernel cannot
    repack its scales (every Linear of FLUX.1 has a multiple of 64 inputs; tiny test models do not).

    The model is flagged ``is_loaded_in_4bit``, as transformers flags its 4-bit models: peft reads it to
    wrap these layers with its bitsandbytes LoRA layer rather than the generic one."""
    import bitsandbytes as bnb

    target = torch.device(device)
    converted = _replace_linears(
        module,
        lambda linear: _nf4_layer(bnb, linear, compute_dtype, target),
        lambda linear: linear.in_features % NF4_BLOCK == 0,
    )
    module.is_loaded_in_4bit = True
    return converted


def _nf4_layer(bnb, linear: nn.Linear, compute_dtype: torch.dtype, device: torch.device) -> nn.Module:
    with torch.device("meta"):
        layer = bnb.nn.Linear4bit(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            compute_dtype=compute_dtype,
            quant_type="nf4",
        )
    # Params4bit quantizes when it is moved to a device; the bf16 copy it starts from is dropped then.
    weight = linear.weight.detach().to(compute_dtype)
    layer.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type="nf4")
    if linear.bias is not None:
        layer.bias = nn.Parameter(linear.bias.detach().to(compute_dtype), requires_grad=False)
    layer.train(linear.training)
    # On a CPU with AVX512-BF16, bitsandbytes repacks a layer for a faster kernel at its first no-grad
    # forward in eval mode, and keeps it so; that kernel has no backward, so a run that samples or
    # evaluates between steps would fail at its next training step.
    layer.support_avx512bf16_for_cpu = False
    return layer.to(device)
