"""The VRAM pre-flight (engine/memory_estimate.py, loratui/memory_check.py), on the tiny models.

The estimate builds the model on the meta device and runs one step on fake tensors; these tests
hold it to the real thing: the byte counts of a really loaded model with its LoRA and a really
stepped optimizer, and the live bytes of a real CPU step measured by the same counter.
"""

from __future__ import annotations

import json

import pytest
import torch

from engine.families import family_for
from engine.lora import attach_lora, find_targets, lora_parameters
from engine.memory_estimate import Estimator, LiveBytes, measure_step, optimizer_state_bytes, prepare, step_shape
from engine.optim import make_optimizer
from loratui import families, memory_check, preflight
from loratui.cli import main as cli_main
from loratui.config import config_from_dict
from tests import fake_nvml
from tests.conftest import SAMPLE, small_config, write_config
from tests.fake_nvml import GIB, FakeGpu

SDXL = {"model": {"path": "loratui:tiny-sdxl", "family": "sdxl"}}
FLUX = {"model": {"path": "loratui:tiny-flux", "family": "flux"}}


def config(**sections):
    return config_from_dict(small_config(**sections), base_dir=SAMPLE)


def loaded_parts(cfg) -> dict[str, torch.nn.Module]:
    """The model's parts as engine/model_loading.py loads them, real weights."""
    model = family_for(cfg.model.family).load(cfg)
    parts = {spec.attribute: getattr(model, spec.attribute) for spec in family_for(cfg.model.family).parts}
    return {**parts, "vae": model.vae}


def tensor_bytes(module: torch.nn.Module) -> int:
    tensors = {id(t): t for t in [*module.parameters(), *module.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())


@pytest.mark.parametrize("model", [{}, SDXL], ids=["tiny-sd", "tiny-sdxl"])
def test_weight_and_lora_bytes_are_those_of_the_loaded_model(model):
    cfg = config(**model, training={"mixed_precision": "bf16"})
    cfg.model.no_half_vae = True
    estimate = Estimator(cfg).estimate(cfg)

    # The real model, cast and given its LoRA as engine/train.py does, counted tensor by tensor.
    real = loaded_parts(cfg)
    real["vae"].to(dtype=torch.float32)
    lora_bytes = 0
    for spec in family_for(cfg.model.family).parts:
        module = real[spec.attribute].to(dtype=torch.bfloat16)
        assert estimate.resident[spec.name] == tensor_bytes(module), spec.name
        if families.trains(cfg, spec.part):
            attach_lora(module, find_targets(module, spec.blocks, cfg.network.rank, cfg.network.alpha))
            lora_bytes += sum(p.numel() * 4 for p in lora_parameters(module))
    assert estimate.resident["vae"] == tensor_bytes(real["vae"])
    assert estimate.breakdown["base_weights"] == sum(estimate.resident.values())
    assert estimate.breakdown["lora_weights"] == lora_bytes > 0
    assert estimate.total == sum(estimate.breakdown.values())


OPTIMIZERS = ["AdamW", "AdamW8bit", "Lion", "Lion8bit", "Adafactor", "DAdaptAdam", "Prodigy"]


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_state_bytes_are_those_of_the_stepped_optimizer(name):
    unet = loaded_parts(config())["unet"]
    spec = family_for("sd1").parts[0]
    attach_lora(unet, find_targets(unet, spec.blocks, 8, 8.0))
    params = lora_parameters(unet)
    assert any(p.numel() >= 4096 for p in params) and any(p.numel() < 4096 for p in params)  # both 8-bit cases
    optimizer = make_optimizer(name, [{"params": params, "lr": 1e-4}], {})
    for param in params:
        param.grad = torch.ones_like(param)
    optimizer.step()
    storages = {}
    for state in optimizer.state.values():
        for key, value in state.items():
            # step counters stay on the CPU; bitsandbytes' quantization maps are shared by all weights
            if isinstance(value, torch.Tensor) and key not in ("step", "qmap1", "qmap2"):
                storages[value.untyped_storage()._cdata] = value.untyped_storage().nbytes()
    zero = [".lora_B." in n for n, p in unet.named_parameters() if p.requires_grad]  # peft's up weights start at 0
    assert optimizer_state_bytes(name, [], [p.shape for p in params], zero) == sum(storages.values())


@pytest.mark.parametrize(
    ("model", "checkpointing"), [({}, False), (SDXL, True)], ids=["tiny-sd", "tiny-sdxl-checkpointing"]
)
def test_fake_step_measures_what_a_real_step_allocates(model, checkpointing):
    cfg = config(**model, dataset={"resolution": 128, "cache_latents": "off"})
    cfg.training.batch_size = 2
    cfg.training.gradient_checkpointing = checkpointing
    shape = step_shape(cfg)
    fake = measure_step(prepare(cfg), shape)
    real = measure_step(prepare(cfg, loaded_parts(cfg)), shape)
    assert fake.peak == pytest.approx(real.peak, rel=0.03)
    assert fake.gradients == pytest.approx(real.gradients, rel=0.03)
    assert fake.vae_encode == pytest.approx(real.vae_encode, rel=0.03)
    assert real.peak > 1_000_000  # a real step at 128 px, not an empty count


def test_weights_are_not_counted_again_through_their_views():
    """A frozen Linear's backward keeps its weight's transpose, a view of a weight already counted as a
    weight: the step's bytes are the input's, its gradient's and the output's, not the 4 MiB matrix."""
    layer = torch.nn.Linear(1024, 1024).requires_grad_(False)
    tokens = torch.ones(4, 1024, requires_grad=True)
    counter = LiveBytes(list(layer.parameters()))
    with counter:
        layer(tokens).sum().backward()
    assert counter.peak < 100_000
    unaware = LiveBytes()  # the control: a counter told of no weights counts the matrix through its view
    with unaware:
        layer(tokens).sum().backward()
    assert unaware.peak > 4 * 1024 * 1024


@pytest.fixture(scope="module")
def sd_estimates():
    """tiny-sd at 256 px, batch 2, latents encoded in each step: the estimates without and with
    gradient checkpointing (both of the training step: nothing is cached before it)."""
    data = small_config(
        dataset={"resolution": 256, "cache_latents": "off"},
        training={"batch_size": 2},
        network={"train_unet_only": True},
    )
    cfg = config_from_dict(data, base_dir=SAMPLE)
    estimator = Estimator(cfg)
    plain = estimator.estimate(cfg)
    cfg.training.gradient_checkpointing = True
    return data, plain, estimator.estimate(cfg)


def test_checkpointing_lowers_the_estimate(sd_estimates):
    _, plain, checkpointed = sd_estimates
    assert plain.phase == checkpointed.phase == "training step"
    assert checkpointed.breakdown["activations"] < 0.8 * plain.breakdown["activations"]
    assert checkpointed.total < plain.total
    assert checkpointed.breakdown["base_weights"] == plain.breakdown["base_weights"]


def test_cached_text_encoders_leave_the_device():
    cfg = config(**SDXL, network={"train_unet_only": True})
    estimator = Estimator(cfg)
    live = estimator.estimate(cfg)
    cfg.dataset.cache_text_encoder_outputs = "memory"
    cached = estimator.estimate(cfg)
    assert set(live.resident) == {"unet", "te1", "te2", "vae"}
    assert set(cached.resident) == {"unet", "vae"}
    moved = live.resident["te1"] + live.resident["te2"]
    assert live.breakdown["base_weights"] - cached.breakdown["base_weights"] == moved


def test_check_refuses_a_run_that_does_not_fit_and_names_a_setting_that_does(
    sd_estimates, project, monkeypatch, capsys
):
    data, plain, checkpointed = sd_estimates
    free = (plain.total + checkpointed.total) // 2  # only with checkpointing (or another saving) does it fit
    gpu = FakeGpu(name="NVIDIA GeForce RTX 3060", total=12 * GIB, used=12 * GIB - free)
    fake_nvml.install(monkeypatch, [gpu])
    monkeypatch.setattr(preflight, "this_machine", lambda: preflight.Machine(gpu.name, (8, 6)))

    code = cli_main(["check", str(write_config(project, data))])  # the real helper process
    out = capsys.readouterr().out
    assert code != 0
    vram = next(line for line in out.splitlines() if line.startswith("VRAM"))
    gib = memory_check.gib
    assert vram == f"VRAM     est. {gib(plain.total)} of {gib(free)} free on NVIDIA GeForce RTX 3060"
    error = next(line for line in out.splitlines() if line.strip().startswith("error"))
    assert "needs about" in error and "training.gradient_checkpointing = true (est." in error

    # The estimate is kept: with room to spare, the check answers without the helper.
    gpu.used = 0
    monkeypatch.setattr(memory_check, "run_helper", lambda *a: pytest.fail("estimated again"))
    assert cli_main(["check", str(write_config(project, data))]) == 0
    assert f"est. {gib(plain.total)} of 12.0 GiB free" in capsys.readouterr().out


def test_without_a_gpu_the_check_skips_the_estimate(project, monkeypatch, capsys):
    monkeypatch.setattr(preflight, "this_machine", lambda: preflight.Machine(None, no_gpu="this test has no GPU"))
    monkeypatch.setattr(memory_check, "run_helper", lambda *a: pytest.fail("estimated without a GPU"))
    assert cli_main(["check", str(write_config(project, small_config()))]) == 0
    vram = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("VRAM"))
    assert vram.startswith("VRAM     N/A (this test has no GPU") and "loratui check --memory" in vram


def test_helper_prints_one_json_object_or_the_config_error(tmp_path):
    import subprocess
    import sys

    bad = write_config(tmp_path, small_config(model={"path": "loratui:no-such-model"}))
    done = subprocess.run([sys.executable, "-m", "engine.memory_estimate", str(bad)], capture_output=True, text=True)
    assert done.returncode == 2
    assert json.loads(done.stdout)["error"]["where"] == "model.path"


# ---------------------------------------------------------------------------------------- Flux
def _real_tiny_flux() -> dict[str, torch.nn.Module]:
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5EncoderModel

    from engine.tiny_flux import ensure_tiny_flux

    folder = ensure_tiny_flux()
    return {
        "transformer": FluxTransformer2DModel.from_pretrained(folder / "transformer"),
        "text_encoder": CLIPTextModel.from_pretrained(folder / "text_encoder"),
        "text_encoder_2": T5EncoderModel.from_pretrained(folder / "text_encoder_2"),
        "vae": AutoencoderKL.from_pretrained(folder / "vae"),
    }


def test_flux_step_fp8_and_block_swap():
    cfg = config(**FLUX, dataset={"resolution": 128, "cache_latents": "off"})
    cfg.model.t5xxl_max_token_length = 64
    shape = step_shape(cfg)
    fake = measure_step(prepare(cfg), shape)
    real_parts = _real_tiny_flux()
    transformer = real_parts["transformer"]
    base_bytes = tensor_bytes(transformer)  # before the LoRA: float32, as mixed_precision "no" keeps it
    linear_weights = sum(m.weight.numel() for m in transformer.modules() if type(m) is torch.nn.Linear)
    single_block = tensor_bytes(transformer.single_transformer_blocks[0])
    single_linear = sum(
        m.weight.numel() for m in transformer.single_transformer_blocks[0].modules() if type(m) is torch.nn.Linear
    )
    real = measure_step(prepare(cfg, real_parts), shape)
    assert fake.peak == pytest.approx(real.peak, rel=0.03)
    assert fake.gradients == pytest.approx(real.gradients, rel=0.03)

    estimator = Estimator(cfg)
    plain = estimator.estimate(cfg).resident["unet"]
    assert plain == base_bytes
    cfg.model.fp8_base = True  # every Linear weight of the transformer in 1 byte instead of 4
    assert plain - estimator.estimate(cfg).resident["unet"] == 3 * linear_weights
    # sd-scripts' split of 2: one double block and two single ones (tiny-flux has one); the larger, the
    # double block, is on the device while it computes.
    cfg.training.blocks_to_swap = 2
    fp8_single_block = single_block - 3 * single_linear
    swapped = estimator.estimate(cfg).resident["unet"]
    assert plain - 3 * linear_weights - swapped == fp8_single_block


def test_flux_fp8_step_through_the_engines_fp8_layers():
    """With fp8 storage each Linear upcasts its weight in its forward, and autograd keeps that copy for the
    backward: the fake step runs engine/low_precision.py's own layers, so it counts those copies."""
    cfg = config(**FLUX, dataset={"resolution": 128, "cache_latents": "off"})
    cfg.model.t5xxl_max_token_length = 64
    cfg.model.fp8_base = True
    shape = step_shape(cfg)
    fake = measure_step(prepare(cfg), shape)
    real = measure_step(prepare(cfg, _real_tiny_flux()), shape)
    assert fake.peak == pytest.approx(real.peak, rel=0.03)
