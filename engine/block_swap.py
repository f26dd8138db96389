"""Training with less accelerator memory by keeping tensors in CPU memory: block swap and checkpoint offload.

Block swap (training.blocks_to_swap N, as kohya's ``--blocks_to_swap`` for Flux): the frozen weights of
N transformer blocks live in CPU memory and are copied to the accelerator just before the block runs,
in the forward and again in the backward (where gradient checkpointing runs the block's forward once
more), and dropped from it when the block is done. sd-scripts splits N into N // 2 double-stream blocks
and (N - N // 2) * 2 single-stream blocks, the last ones of each list (library/flux_models.py
``enable_block_swap``; a single block holds about half a double block's weights).

Why not diffusers' ``apply_group_offloading``: it moves every parameter of a group, the trainable LoRA
factors too. With CUDA streams it restores each parameter from the CPU copy it took when the hooks were
installed, so the optimizer's updates to a LoRA inside an offloaded block would be thrown away at each
offload; without streams the LoRA's parameters and gradients would sit on different devices. It also
offloads a block right after its forward, while autograd may still hold that block's weights for the
backward. Here only frozen parameters move, the LoRA stays on the accelerator, and a block leaves it in
the backward only once its gradients are done.

Checkpoint offload (training.cpu_offload_checkpointing, as kohya's ``--cpu_offload_checkpointing``):
with gradient checkpointing, what autograd keeps between the forward and the backward is mostly each
checkpointed block's inputs; sd-scripts moves those to CPU memory and back when the block is recomputed.
``checkpoint_offload`` does the same with saved-tensor hooks around the denoiser's forward.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from loratui.flux_blocks import split_blocks

DOUBLE_BLOCKS = "transformer_blocks"  # diffusers' FluxTransformer2DModel (BFL: double_blocks)
SINGLE_BLOCKS = "single_transformer_blocks"  # BFL: single_blocks


@dataclass(frozen=True)
class SwapSplit:
    """How many blocks of each kind are kept in CPU memory."""

    double: int
    single: int


def swap_split(blocks_to_swap: int, double_blocks: int, single_blocks: int) -> SwapSplit:
    """sd-scripts' split of N into double and single blocks, capped at the blocks the model has.

    For FLUX.1 (19 double, 38 single) N <= 35 gives at most 17 and 36, within sd-scripts' own limit (all
    but 2 of each kind, which its swap needs to exchange blocks); here a block needs no partner to leave,
    so a small model may swap every block it has (loratui:tiny-flux has one of each)."""
    if blocks_to_swap < 0:
        raise ValueError(f"blocks_to_swap must be 0 or more, not {blocks_to_swap}")
    return SwapSplit(*split_blocks(blocks_to_swap, double_blocks, single_blocks))


class BlockSwap:
    """Hooks that keep the frozen weights of ``blocks`` in CPU memory except while a block computes.

    The weights' CPU copies are authoritative and never change (they are frozen), so leaving the
    accelerator is only dropping the device copy. Trainable parameters (the LoRA) and buffers stay on the
    device. Training needs gradient checkpointing: without it autograd would hold every block's device
    weights from the forward to the backward, and offloading them would pull them from under it.

    The copies run on the current stream, in order with the compute; the CPU copies are pinned on CUDA so
    they do not block the Python side. (sd-scripts overlaps them with a worker thread; not done here.)
    """

    def __init__(self, model: nn.Module, blocks: list[nn.Module], device: torch.device, split: SwapSplit):
        self.model = model
        self.blocks = blocks
        self.device = torch.device(device)
        self.split = split
        self.resident: set[int] = set()  # indices into ``blocks`` whose weights are on the device now
        self._home: dict[nn.Parameter, torch.Tensor] = {}  # frozen parameter -> its CPU copy
        self._handles = []
        for index, block in enumerate(blocks):
            self._send_home(block)
            self._handles.append(block.register_forward_pre_hook(self._pre_hook(index)))
            self._handles.append(block.register_forward_hook(self._post_hook(index)))

    def remove(self) -> None:
        """Take the hooks off; the swapped blocks' frozen weights are left in CPU memory."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for index in list(self.resident):
            self._offload(index)

    def _pre_hook(self, index: int):
        def onload_before_forward(block: nn.Module, args) -> None:
            in_backward = _in_backward()
            if torch.is_grad_enabled() and not in_backward and not _checkpointing(self.model):
                raise RuntimeError("block swap trains only with gradient checkpointing on")
            if in_backward:
                # The backward runs the blocks last to first, each finished before the one before it is
                # recomputed: the other resident blocks are no longer needed.
                for other in list(self.resident - {index}):
                    self._offload(other)
            self._onload(index)

        return onload_before_forward

    def _post_hook(self, index: int):
        def offload_after_forward(block: nn.Module, args, output) -> None:
            # In the backward's recomputation autograd has just saved this block's device weights for the
            # gradients it is about to compute: the block leaves when the next one is recomputed. (torch's
            # checkpoint usually stops a recomputation before the hook runs; not when early stop is off.)
            if not _in_backward():
                self._offload(index)

        return offload_after_forward

    def _send_home(self, block: nn.Module) -> None:
        pin = self.device.type == "cuda"
        for param in block.parameters():
            if param.requires_grad:
                param.data = param.data.to(self.device)
            elif param not in self._home:
                home = param.data.to("cpu")
                self._home[param] = home.pin_memory() if pin else home
                param.data = self._home[param]
        for buffer in block.buffers():
            buffer.data = buffer.data.to(self.device)

    def _onload(self, index: int) -> None:
        block = self.blocks[index]
        self._send_home(block)  # parameters added since (a LoRA attached later) get their places too
        if index in self.resident:  # the block the last backward ended with: its device copy is current
            return
        for param in block.parameters():
            if param in self._home:
                home = self._home[param]
                # A copy even when the device is the CPU, so the CPU tests run the same path as a GPU.
                param.data = torch.empty_like(home, device=self.device).copy_(home, non_blocking=True)
        self.resident.add(index)

    def _offload(self, index: int) -> None:
        for param in self.blocks[index].parameters():
            if param in self._home:
                param.data = self._home[param]
        self.resident.discard(index)


def _in_backward() -> bool:
    """Whether autograd's backward is running on this thread (a checkpointed block being recomputed)."""
    # Private, but the same call torch.utils.checkpoint makes to tell its recomputation from a forward.
    return torch._C._current_graph_task_id() != -1


def _checkpointing(model: nn.Module) -> bool:
    return bool(getattr(model, "gradient_checkpointing", False))


def place_with_block_swap(transformer: nn.Module, device: torch.device | str, blocks_to_swap: int) -> BlockSwap:
    """Move a diffusers FluxTransformer2DModel to ``device`` except the frozen weights of the blocks that
    swap, and install the swap hooks. Call it instead of ``transformer.to(device)`` (and keep accelerate
    from placing the model), after the dtype cast, fp8 storage and the LoRA."""
    double_blocks = list(getattr(transformer, DOUBLE_BLOCKS))
    single_blocks = list(getattr(transformer, SINGLE_BLOCKS))
    split = swap_split(blocks_to_swap, len(double_blocks), len(single_blocks))
    swapped = double_blocks[len(double_blocks) - split.double :] + single_blocks[len(single_blocks) - split.single :]
    if any(type(layer).__name__ == "Linear4bit" for block in swapped for layer in block.modules()):
        # bitsandbytes keeps a 4-bit weight's scales beside it (quant_state), where moving the weight alone
        # would leave them; an NF4 transformer (about 6.5 GB for FLUX.1) fits without swapping anyway.
        raise ValueError("block swap cannot move NF4 (4-bit) blocks: use fp8 base weights with block swap")
    swapped_params = {param for block in swapped for param in block.parameters()}
    target = torch.device(device)
    for param in transformer.parameters():
        if param not in swapped_params or param.requires_grad:
            param.data = param.data.to(target)
    for buffer in transformer.buffers():
        buffer.data = buffer.data.to(target)
    return BlockSwap(transformer, swapped, target, split)


class _CpuStore:
    """Saved-tensor hooks that keep what autograd saves in CPU memory until the backward needs it."""

    def __init__(self):
        self.stored_bytes = 0  # bytes of saved tensors kept in CPU memory since the context was entered

    def pack(self, tensor: torch.Tensor):
        # A weight (a Linear saves its transposed view) is kept by its module anyway: a CPU copy would
        # only add traffic.
        if _is_parameter(tensor):
            return tensor
        self.stored_bytes += tensor.numel() * tensor.element_size()
        if tensor.device.type == "cpu":
            return tensor
        stored = torch.empty(tensor.size(), dtype=tensor.dtype, pin_memory=tensor.is_cuda)
        stored.copy_(tensor, non_blocking=True)
        return tensor.device, stored

    @staticmethod
    def unpack(packed):
        if isinstance(packed, torch.Tensor):
            return packed
        device, stored = packed
        return stored.to(device, non_blocking=True)


def _is_parameter(tensor: torch.Tensor) -> bool:
    return isinstance(tensor, nn.Parameter) or isinstance(tensor._base, nn.Parameter)


@contextlib.contextmanager
def checkpoint_offload(enabled: bool) -> Iterator[_CpuStore | None]:
    """Around the denoiser's forward: the tensors autograd saves for the backward are kept in CPU memory.

    With gradient checkpointing (torch's non-reentrant checkpoint, diffusers' default) those are the
    checkpointed blocks' inputs, plus what the layers outside the blocks save; the blocks' insides are
    recomputed in the backward, outside this context, on the device. Yields the store (its
    ``stored_bytes`` tell how much went to CPU memory), or None when not enabled.
    """
    if not enabled:
        yield None
        return
    store = _CpuStore()
    with torch.autograd.graph.saved_tensors_hooks(store.pack, store.unpack):
        yield store
