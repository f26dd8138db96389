"""Flux's memory features on the CPU (engine/low_precision.py, engine/block_swap.py): fp8 and NF4 base
weights under a trainable LoRA, block swap, and checkpoint offload, on loratui:tiny-flux's parts.

What only a GPU can show (weights really leaving the accelerator, the peak memory they save) is in the
``gpu`` class at the end, skipped here."""

from __future__ import annotations

import copy
import sys

import pytest
import torch
import torch.utils.checkpoint
from torch import nn

from engine.block_swap import BlockSwap, SwapSplit, checkpoint_offload, place_with_block_swap, swap_split
from engine.flux_names import FLUX_BLOCKS
from engine.lora import attach_lora, find_targets, lora_parameters
from engine.low_precision import FP8_DTYPE, Fp8Linear, nf4_available, store_in_fp8, store_in_nf4
from engine.tiny_flux import ensure_tiny_flux

IMAGE_TOKENS, TEXT_TOKENS = 16, 8


@pytest.fixture(scope="module")
def flux_dir():
    return ensure_tiny_flux()


def load_transformer(flux_dir, **config_changes):
    """The tiny Flux transformer; with config changes (more blocks) a seeded random one of that shape."""
    from diffusers import FluxTransformer2DModel

    model = FluxTransformer2DModel.from_pretrained(flux_dir / "transformer")
    if config_changes:
        torch.manual_seed(0)
        model = FluxTransformer2DModel.from_config({**model.config, **config_changes})
    return model.requires_grad_(False)


def flux_inputs(seed: int = 0, dtype=torch.float32) -> dict:
    """One batch of transformer inputs shaped as a Flux training step feeds them (packed latents)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.zeros(IMAGE_TOKENS, 3)
    ids[:, 1], ids[:, 2] = torch.arange(IMAGE_TOKENS) // 4, torch.arange(IMAGE_TOKENS) % 4
    return {
        "hidden_states": torch.randn(2, IMAGE_TOKENS, 64, generator=gen, dtype=dtype),
        "encoder_hidden_states": torch.randn(2, TEXT_TOKENS, 48, generator=gen, dtype=dtype),
        "pooled_projections": torch.randn(2, 32, generator=gen, dtype=dtype),
        "timestep": torch.tensor([0.3, 0.8], dtype=dtype),
        "guidance": torch.tensor([1.0, 1.0], dtype=dtype),
        "img_ids": ids,
        "txt_ids": torch.zeros(TEXT_TOKENS, 3),
        "return_dict": False,
    }


def with_lora(model: nn.Module, rank: int = 4) -> nn.Module:
    torch.manual_seed(1)
    attach_lora(model, find_targets(model, FLUX_BLOCKS, rank, float(rank)))
    for param in lora_parameters(model):
        param.data = param.data.float()  # as engine/train.py keeps the LoRA
        nn.init.normal_(param, std=0.05)  # B away from zero, so the LoRA changes outputs and gradients
    return model


def linears(model: nn.Module) -> dict[str, nn.Linear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}


def rounded_through_fp8(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """The reference for fp8 storage: the same model, each Linear weight rounded to float8 and back."""
    reference = copy.deepcopy(model).to(dtype)
    for layer in linears(reference).values():
        layer.weight.data = layer.weight.data.to(FP8_DTYPE).to(dtype)
    return reference


# fp8 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fp8_transformer_stores_float8_and_computes_in_the_training_dtype(flux_dir, dtype):
    model = load_transformer(flux_dir).to(dtype)
    reference = rounded_through_fp8(model, dtype)
    count = len(linears(model))
    before = {n: p.clone() for n, p in model.named_parameters() if p.ndim == 1 and "norm" in n}

    assert store_in_fp8(model, dtype) == count
    layers = linears(model)
    assert all(isinstance(m, Fp8Linear) and m.weight.dtype == FP8_DTYPE for m in layers.values())
    # Norm scales are not Linears: left in the training dtype, unchanged.
    after = dict(model.named_parameters())
    assert before and all(after[n].dtype == dtype and torch.equal(after[n], p) for n, p in before.items())
    weight_bytes = sum(m.weight.numel() for m in layers.values())
    assert sum(m.weight.numel() * m.weight.element_size() for m in layers.values()) == weight_bytes

    with torch.no_grad():
        out = model(**flux_inputs(dtype=dtype))[0]
        expected = reference(**flux_inputs(dtype=dtype))[0]
    assert out.dtype == dtype
    assert torch.equal(out, expected)  # the same matmuls on the same (rounded) values


def test_fp8_base_trains_a_float32_lora_under_peft(flux_dir):
    model = load_transformer(flux_dir).to(torch.bfloat16)
    store_in_fp8(model, torch.bfloat16)
    frozen = {n: p.clone() for n, p in model.named_parameters()}
    attach_lora(model, find_targets(model, FLUX_BLOCKS, 4, 4.0))
    from peft.tuners.lora import Linear as LoraLinear

    wrapped = [m for m in model.modules() if isinstance(m, LoraLinear)]
    assert wrapped and all(isinstance(m.base_layer, Fp8Linear) for m in wrapped)
    # peft gives a new LoRA its base layer's dtype: the compute dtype here (it reads compute_dtype), not float8.
    params = lora_parameters(model)
    assert params and all(p.dtype == torch.bfloat16 for p in params)
    for param in params:
        param.data = param.data.float()  # as engine/train.py keeps the LoRA
        nn.init.normal_(param, std=0.05)

    model(**flux_inputs(dtype=torch.bfloat16))[0].float().square().mean().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 and p.grad.abs().sum() > 0 for p in params)
    assert all(p.grad is None for n, p in model.named_parameters() if n in frozen)
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)


def test_fp8_layers_keep_only_their_float8_weight_for_the_backward():
    """The memory fp8 saves must last through the backward: what autograd keeps of an Fp8Linear is its input
    and its float8 weight, never a bf16 copy of the weight; the input's gradient is the upcast weight's."""
    linear = nn.Linear(256, 512).to(torch.bfloat16).requires_grad_(False)
    reference = rounded_through_fp8(linear, torch.bfloat16)
    layer = Fp8Linear.from_linear(linear, torch.bfloat16)
    saved: list[torch.Tensor] = []
    x = torch.randn(8, 256, dtype=torch.bfloat16, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = layer(x)
    assert {t.dtype for t in saved if t.shape == (512, 256)} == {torch.float8_e4m3fn}
    assert sum(t.numel() * t.element_size() for t in saved) < 512 * 256 * 2  # less than one bf16 weight
    out.float().square().sum().backward()
    x_ref = x.detach().clone().requires_grad_(True)
    reference(x_ref).float().square().sum().backward()
    torch.testing.assert_close(out, reference(x_ref.detach()))
    torch.testing.assert_close(x.grad, x_ref.grad)


def test_fp8_after_lora_converts_only_the_base_layers(flux_dir):
    model = with_lora(load_transformer(flux_dir))
    lora_before = {n: p.clone() for n, p in model.named_parameters() if "lora_" in n}
    base_count = len([n for n in linears(model) if "lora_" not in n])

    assert store_in_fp8(model, torch.float32) == base_count
    assert all(p.dtype == torch.float32 and p.requires_grad for n, p in model.named_parameters() if "lora_" in n)
    assert all(torch.equal(p, lora_before[n]) for n, p in model.named_parameters() if "lora_" in n)
    assert store_in_fp8(model, torch.float32) == 0  # nothing left to convert


def test_fp8_text_encoders_keep_embeddings_and_norms(flux_dir):
    from transformers import CLIPTextModel, T5EncoderModel

    ids = torch.tensor([[1, 5, 9, 12, 2, 0]])
    for encoder_class, folder in ((CLIPTextModel, "text_encoder"), (T5EncoderModel, "text_encoder_2")):
        encoder = encoder_class.from_pretrained(flux_dir / folder).requires_grad_(False).to(torch.bfloat16)
        reference = rounded_through_fp8(encoder, torch.bfloat16)
        assert store_in_fp8(encoder, torch.bfloat16) == len(linears(reference))
        kinds = {type(m).__name__: m for m in encoder.modules()}
        assert any("Embedding" in name for name in kinds)
        for module in encoder.modules():
            if isinstance(module, nn.Embedding) or "Norm" in type(module).__name__:
                assert all(p.dtype == torch.bfloat16 for p in module.parameters()), type(module).__name__
        with torch.no_grad():
            out = encoder(input_ids=ids).last_hidden_state
            expected = reference(input_ids=ids).last_hidden_state
        # T5's feed-forward would round its activations to float8 before ``wo`` if it were not patched.
        assert torch.equal(out, expected), encoder_class.__name__


def test_fp8_refuses_a_compute_dtype_that_is_not_a_float():
    with pytest.raises(ValueError, match="bfloat16"):
        store_in_fp8(nn.Linear(4, 4), torch.float8_e4m3fn)


# NF4 ------------------------------------------------------------------------------------------


def test_nf4_refusal_names_bitsandbytes(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # what an absent install looks like to import
    reason = nf4_available("cpu")
    assert reason is not None and reason.startswith("bitsandbytes cannot be imported")


def test_nf4_refusal_when_the_device_cannot_run_it(monkeypatch):
    import bitsandbytes as bnb

    def no_kernel(*args, **kwargs):
        raise RuntimeError("no 4-bit kernel for this device\nsecond line")

    monkeypatch.setattr(bnb.nn.Linear4bit, "forward", no_kernel)
    reason = nf4_available("cpu")
    assert reason == f"bitsandbytes {bnb.__version__} cannot run NF4 on cpu (no 4-bit kernel for this device)"


def test_nf4_base_trains_a_lora(flux_dir):
    reason = nf4_available("cpu")
    if reason is not None:  # bitsandbytes 0.50 runs NF4 on the CPU; a platform without it refuses above
        pytest.skip(reason)
    import bitsandbytes as bnb
    from peft.tuners.lora.bnb import Linear4bit as LoraLinear4bit

    model = load_transformer(flux_dir).to(torch.bfloat16)
    plain = copy.deepcopy(model)
    count = len([m for m in linears(model).values() if m.in_features % 64 == 0])
    assert 0 < count < len(linears(model))  # tiny-flux's 32-wide pooled-text input stays as it is
    assert store_in_nf4(model, torch.bfloat16, "cpu") == count
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(layers) == count and all(m.weight.quant_type == "nf4" and m.weight.dtype == torch.uint8 for m in layers)

    inputs = flux_inputs(dtype=torch.bfloat16)
    with torch.no_grad():
        quantized_out, plain_out = model(**inputs)[0].float(), plain(**inputs)[0].float()
    # 4 bits a weight changes the output a little, not wholesale.
    assert 0 < (quantized_out - plain_out).norm() < 0.25 * plain_out.norm()

    torch.manual_seed(1)
    attach_lora(model, find_targets(model, FLUX_BLOCKS, 4, 4.0))
    assert any(isinstance(m, LoraLinear4bit) for m in model.modules())  # peft's bitsandbytes LoRA layer
    params = lora_parameters(model)
    for param in params:
        param.data = param.data.float()
    optimizer = torch.optim.AdamW(params, lr=3e-3)
    target = torch.randn_like(quantized_out)
    losses = []
    for _ in range(8):
        loss = (model(**inputs)[0].float() - target).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    assert all(p.grad is not None and p.dtype == torch.float32 for p in params)


# block swap -------------------------------------------------------------------------------------


def test_swap_split_follows_sd_scripts():
    flux_dev = (19, 38)
    assert swap_split(0, *flux_dev) == SwapSplit(0, 0)
    assert swap_split(1, *flux_dev) == SwapSplit(0, 2)
    assert swap_split(16, *flux_dev) == SwapSplit(8, 16)  # sd-scripts' 12 GB recipe
    assert swap_split(35, *flux_dev) == SwapSplit(17, 36)  # the most sd-scripts allows
    assert swap_split(2, 1, 1) == SwapSplit(1, 1)  # tiny-flux: capped at the blocks it has
    with pytest.raises(ValueError):
        swap_split(-1, *flux_dev)


def swap_model(flux_dir, fp8: bool = False) -> nn.Module:
    model = load_transformer(flux_dir, num_layers=3, num_single_layers=4)
    if fp8:
        store_in_fp8(model, torch.float32)
    with_lora(model)
    model.enable_gradient_checkpointing()
    return model.train()


def loss_and_grads(model: nn.Module, seed: int = 0):
    out = model(**flux_inputs(seed))[0]
    out.square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return out.detach(), grads


@pytest.mark.parametrize("fp8", [False, True])
def test_block_swap_gives_the_unswapped_outputs_and_gradients(flux_dir, fp8):
    plain = swap_model(flux_dir, fp8)
    swapped = copy.deepcopy(plain)
    swap = place_with_block_swap(swapped, "cpu", blocks_to_swap=3)
    assert swap.split == SwapSplit(1, 4) and len(swap.blocks) == 5
    assert (FP8_DTYPE in {home.dtype for home in swap._home.values()}) == fp8  # float8 weights swap as they are

    for seed in (0, 1):  # a second step starts from whatever the first one left behind
        expected_out, expected_grads = loss_and_grads(plain, seed)
        out, grads = loss_and_grads(swapped, seed)
        assert torch.equal(out, expected_out)
        assert grads.keys() == expected_grads.keys() and len(grads) == len(lora_parameters(plain))
        assert all(torch.equal(grads[n], expected_grads[n]) for n in grads)


@pytest.mark.parametrize("early_stop", [True, False])
def test_block_swap_weights_are_copied_in_for_forward_and_backward_and_dropped_after(flux_dir, early_stop):
    """early_stop: torch's checkpoint stops a block's recomputation once it has every tensor the backward
    needs (the default), so the block's forward hook does not run in the backward; without it, it does."""
    model = swap_model(flux_dir)
    swap = place_with_block_swap(model, "cpu", blocks_to_swap=3)
    swapped_ids = {id(b) for b in swap.blocks}
    homes = {p: home for p, home in swap._home.items()}
    # Only frozen weights are kept in CPU memory; the LoRA's stay where they train.
    assert homes and not any(p.requires_grad for p in homes)
    assert not any(p in homes for p in lora_parameters(model))

    def on_device_copy(block: nn.Module) -> bool:
        """The block's frozen weights are the copy made for computing, not the kept CPU copy."""
        frozen = [p for p in block.parameters() if p in homes]
        return bool(frozen) and all(p.data_ptr() != homes[p].data_ptr() for p in frozen)

    events = []

    def record_forward(index):
        def hook(block, args):  # registered after the swap's own hook, so it sees what the block runs with
            events.append(("forward", index, torch._C._current_graph_task_id() != -1, on_device_copy(block)))

        return hook

    for index, block in enumerate(swap.blocks):
        block.register_forward_pre_hook(record_forward(index))
        for name, param in block.named_parameters():
            if ".lora_B." in name:  # fires in the middle of this block's backward
                param.register_hook(
                    lambda grad, index=index, block=block: events.append(("grad", index, True, on_device_copy(block)))
                )

    with torch.utils.checkpoint.set_checkpoint_early_stop(early_stop):
        loss_and_grads(model)

    forwards = [e for e in events if e[0] == "forward" and not e[2]]
    recomputes = [e for e in events if e[0] == "forward" and e[2]]
    grads = [e for e in events if e[0] == "grad"]
    assert [e[1] for e in forwards] == [0, 1, 2, 3, 4]  # each swapped block once in the forward
    assert sorted(e[1] for e in recomputes) == [0, 1, 2, 3, 4]  # and again when checkpointing recomputes it
    assert grads and {e[1] for e in grads} == {0, 1, 2, 3, 4}
    assert all(e[3] for e in forwards + recomputes + grads)  # on the device copy whenever it computes
    assert len(swap.resident) <= 1  # between steps at most the block the backward finished with
    for block in model.modules():
        if id(block) in swapped_ids and swap.blocks.index(block) not in swap.resident:
            assert not on_device_copy(block)
    # The last blocks of each kind swap, as in sd-scripts: 1 of the 3 double blocks, all 4 single ones.
    assert [id(b) in swapped_ids for b in model.transformer_blocks] == [False, False, True]
    assert all(id(b) in swapped_ids for b in model.single_transformer_blocks)

    with torch.no_grad():  # sampling: each block in and out once
        events.clear()
        model(**flux_inputs())
    assert [e[1] for e in events] == [0, 1, 2, 3, 4] and all(e[3] for e in events) and not swap.resident


def test_block_swap_refuses_training_without_checkpointing(flux_dir):
    model = with_lora(load_transformer(flux_dir))
    place_with_block_swap(model, "cpu", blocks_to_swap=2)
    with pytest.raises(RuntimeError, match="gradient checkpointing"):
        model(**flux_inputs())
    with torch.no_grad():
        model(**flux_inputs())  # sampling needs no backward, so no checkpointing


def test_block_swap_remove_takes_the_hooks_off(flux_dir):
    model = swap_model(flux_dir)
    swap = place_with_block_swap(model, "cpu", blocks_to_swap=2)
    loss_and_grads(model)
    swap.remove()
    assert not swap.resident
    calls = []
    swap._onload = lambda index: calls.append(index)
    loss_and_grads(model)
    assert calls == []


def test_block_swap_refuses_nf4_blocks(flux_dir):
    if nf4_available("cpu") is not None:
        pytest.skip(nf4_available("cpu"))
    model = load_transformer(flux_dir).to(torch.bfloat16)
    store_in_nf4(model, torch.bfloat16, "cpu")
    with pytest.raises(ValueError, match="NF4"):
        place_with_block_swap(model, "cpu", blocks_to_swap=2)


def test_block_swap_zero_swaps_nothing(flux_dir):
    model = load_transformer(flux_dir)
    swap = place_with_block_swap(model, "cpu", blocks_to_swap=0)
    assert isinstance(swap, BlockSwap) and swap.blocks == [] and swap.split == SwapSplit(0, 0)


# checkpoint offload ----------------------------------------------------------------------------


def test_checkpoint_offload_keeps_the_block_inputs_and_changes_no_gradient(flux_dir, monkeypatch):
    from engine import block_swap

    plain = swap_model(flux_dir)
    offloaded = copy.deepcopy(plain)
    expected_out, expected_grads = loss_and_grads(plain)

    saved = []
    pack = block_swap._CpuStore.pack
    monkeypatch.setattr(block_swap._CpuStore, "pack", lambda self, t: (saved.append(t), pack(self, t))[1])
    with checkpoint_offload(True) as store:
        out = offloaded(**flux_inputs())[0]
    out.square().mean().backward()
    grads = {n: p.grad for n, p in offloaded.named_parameters() if p.grad is not None}

    assert torch.equal(out, expected_out)
    assert grads.keys() == expected_grads.keys() and all(torch.equal(grads[n], expected_grads[n]) for n in grads)
    blocks = len(plain.transformer_blocks) + len(plain.single_transformer_blocks)
    width = plain.config.num_attention_heads * plain.config.attention_head_dim
    block_inputs = [t for t in saved if tuple(t.shape) == (2, IMAGE_TOKENS, width)]
    assert len(block_inputs) >= blocks  # each checkpointed block's image-token input went to the store
    # Weights saved by the layers outside the blocks are passed through, not copied; the rest is counted.
    weights = {id(p) for p in offloaded.parameters()}
    is_weight = [id(t) in weights or id(t._base) in weights for t in saved]
    assert any(is_weight)
    stored = sum(t.numel() * t.element_size() for t, weight in zip(saved, is_weight, strict=True) if not weight)
    assert store.stored_bytes == stored > 0


def test_checkpoint_offload_disabled_hooks_nothing():
    with checkpoint_offload(False) as store:
        x = torch.ones(3, requires_grad=True)
        (x * x).sum().backward()
    assert store is None


# GPU -------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
class TestOnTheGpu:
    def test_swapped_weights_live_on_the_cpu_and_compute_on_the_gpu(self, flux_dir):
        plain = swap_model(flux_dir)
        expected_out, expected_grads = loss_and_grads(plain)
        model = copy.deepcopy(plain)
        swap = place_with_block_swap(model, "cuda", blocks_to_swap=3)
        seen = []
        for block in swap.blocks:
            block.register_forward_pre_hook(lambda b, args: seen.append({p.device.type for p in b.parameters()}))
        inputs = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in flux_inputs().items()}
        out = model(**inputs)[0]
        out.square().mean().backward()
        assert seen and all(devices == {"cuda"} for devices in seen)
        idle = [b for i, b in enumerate(swap.blocks) if i not in swap.resident]
        assert idle and all(p.device.type == "cpu" for b in idle for p in b.parameters() if not p.requires_grad)
        assert all(p.device.type == "cuda" for p in lora_parameters(model))
        torch.testing.assert_close(out.cpu(), expected_out, rtol=1e-3, atol=1e-4)
        grads = {n: p.grad.cpu() for n, p in model.named_parameters() if p.grad is not None}
        for name, grad in expected_grads.items():
            torch.testing.assert_close(grads[name], grad, rtol=1e-3, atol=1e-4)

    def test_checkpoint_offload_moves_saved_tensors_off_the_gpu(self, flux_dir):
        model = swap_model(flux_dir).cuda()
        inputs = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in flux_inputs().items()}
        with checkpoint_offload(True) as store:
            out = model(**inputs)[0]
        out.square().mean().backward()
        assert store.stored_bytes > 0
        assert all(p.grad is not None and p.grad.is_cuda for p in lora_parameters(model))
