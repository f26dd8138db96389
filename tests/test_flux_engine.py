"""The engine on the tiny Flux model: real training, real files, checked the way a user would.

Runs are small (the sample's 8 images at 64 px, 20 steps an epoch, T5 captions cut to 32 tokens)
so that the file stays quick on a CPU; tests/test_engine.py covers what the families share.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from tests.conftest import SAMPLE, small_config, train_in_process, write_config

pytestmark = pytest.mark.slow

RANK = 4


def flux_config(**sections) -> dict:
    """The sample images on loratui:tiny-flux at 64 px: 8 images x 10 repeats, batch 4 -> 20 steps an
    epoch, 2 epochs; the transformer and CLIP-L trained, sd-scripts' advised sampling."""
    data = small_config(
        model={"path": "loratui:tiny-flux", "family": "flux", "t5xxl_max_token_length": 32},
        dataset={"resolution": 64, "min_bucket_reso": 64, "max_bucket_reso": 256, "bucket_reso_steps": 32},
        network={"rank": RANK, "alpha": 2.0},
        optimizer={"unet_lr": 3e-3, "text_encoder_lr": 1e-3},
        training={
            "timestep_sampling": "shift",
            "discrete_flow_shift": 3.1582,
            "model_prediction_type": "raw",
            "guidance_scale": 1.0,
        },
    )
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return data


def copy_sample(folder: Path) -> Path:
    shutil.copytree(SAMPLE / "img", folder / "img")
    return folder


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One full Flux run, shared by the tests that only read its results; the keyword arguments of
    every transformer call are recorded."""
    from diffusers import FluxTransformer2DModel

    folder = copy_sample(tmp_path_factory.mktemp("flux-run"))
    calls: list[dict] = []
    forward = FluxTransformer2DModel.forward

    def recording(self, *args, **kwargs):
        calls.append({k: v.detach().clone() if torch.is_tensor(v) else v for k, v in kwargs.items()})
        return forward(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(FluxTransformer2DModel, "forward", recording)
        recorder, trainer = train_in_process(write_config(folder, flux_config()))
    return folder, recorder, trainer, calls


def test_flux_trains_with_finite_losses_and_a_falling_eval_loss(finished_run):
    _, recorder, _, _ = finished_run
    steps = recorder.of("step")
    assert [s["step"] for s in steps] == list(range(1, 41))
    assert all(math.isfinite(s["loss"]) and s["loss"] > 0 for s in steps)
    assert set(steps[0]["lr"]) == {"unet", "text_encoder"}
    evals = recorder.of("eval")
    assert [e["step"] for e in evals] == [0, 20, 40]
    # Same images, noise levels and noise each time: a drop means the LoRA learned the data.
    assert evals[-1]["loss"] < evals[0]["loss"] * 0.98, evals
    assert recorder.events[-1]["type"] == "finished"


def test_the_transformer_gets_packed_latents_sigmas_guidance_and_the_text(finished_run):
    from engine.tiny_flux import CLIP_WIDTH, T5_WIDTH

    _, _, _, calls = finished_run
    # A training step (the eval runs one image at a time): batch 4 at 64 px -> 8x8 latents -> 16 patches of 64.
    call = next(c for c in reversed(calls) if c["hidden_states"].shape[0] == 4)
    assert call["hidden_states"].shape == (4, 16, 64)
    assert call["img_ids"].shape == (16, 3)
    assert call["img_ids"][:, 0].eq(0).all()  # (0, row, column) per patch
    assert call["img_ids"][5].tolist() == [0.0, 1.0, 1.0]
    assert call["encoder_hidden_states"].shape == (4, 32, T5_WIDTH)  # t5xxl_max_token_length 32
    assert call["txt_ids"].shape == (32, 3) and not call["txt_ids"].any()
    assert call["pooled_projections"].shape == (4, CLIP_WIDTH)
    assert call["guidance"].tolist() == [1.0] * 4  # training.guidance_scale, dev only
    sigmas = torch.cat([c["timestep"] for c in calls if c["hidden_states"].shape[0] == 4])
    assert ((sigmas > 0) & (sigmas <= 1)).all()  # sigma, not sigma x 1000: diffusers scales inside
    assert "joint_attention_kwargs" not in call or call["joint_attention_kwargs"] is None


def test_the_file_is_a_kohya_flux_lora_with_fused_modules(finished_run):
    folder, _, trainer, _ = finished_run
    path = folder / "model" / "test_lora.safetensors"
    tensors = load_file(path)
    unet = {k.split(".")[0] for k in tensors if k.startswith("lora_unet_")}
    assert unet == {
        *(f"lora_unet_double_blocks_0_{side}_{m}" for side in ("img", "txt") for m in ("attn_qkv", "attn_proj")),
        *(f"lora_unet_double_blocks_0_{side}_{m}" for side in ("img", "txt") for m in ("mlp_0", "mlp_2", "mod_lin")),
        "lora_unet_single_blocks_0_linear1",
        "lora_unet_single_blocks_0_linear2",
        "lora_unet_single_blocks_0_modulation_lin",
    }
    # q, k and v fused: rank 3r with alpha 3 x 2.0 keeps each member's scale alpha / rank.
    assert tensors["lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight"].shape[0] == 3 * RANK
    assert tensors["lora_unet_double_blocks_0_img_attn_qkv.alpha"].item() == pytest.approx(3 * 2.0)
    assert tensors["lora_unet_single_blocks_0_linear1.lora_down.weight"].shape[0] == 4 * RANK
    assert tensors["lora_unet_single_blocks_0_linear2.lora_down.weight"].shape[0] == RANK
    assert any(k.startswith("lora_te1_text_model_encoder_layers_0_self_attn_q_proj") for k in tensors)
    assert not any(k.startswith(("lora_te2_", "lora_te3_")) for k in tensors)  # T5 never trains
    meta = safe_open(str(path), "pt").metadata()
    assert meta["ss_base_model_version"] == "flux1" and meta["ss_model_type"] == "flux"
    assert meta["modelspec.architecture"] == "flux-1-dev/lora"
    assert meta["modelspec.implementation"] == "https://github.com/black-forest-labs/flux"
    assert meta["modelspec.sai_model_spec"] == "1.0.1" and "modelspec.prediction_type" not in meta
    assert meta["ss_network_dim"] == str(RANK)  # the trained rank, not the fused modules' 3r and 4r
    assert meta["ss_timestep_sampling"] == "shift" and meta["ss_discrete_flow_shift"] == "3.1582"
    assert meta["ss_model_prediction_type"] == "raw" and meta["ss_guidance_scale"] == "1"
    assert meta["ss_fp8_base"] == "False" and meta["ss_apply_t5_attn_mask"] == "False"
    assert "ss_v_parameterization" not in meta and "ss_clip_skip" not in meta


def test_the_files_fused_deltas_are_the_trained_layers_deltas(finished_run):
    """What any loader adds to BFL's fused qkv layer, alpha / R x up @ down, is row block by row block
    what the trained LoRA adds to diffusers' to_q, to_k and to_v."""
    folder, _, trainer, _ = finished_run
    tensors = {k: v.float() for k, v in load_file(folder / "model" / "test_lora.safetensors").items()}
    transformer = next(p.module for p in trainer.parts if p.spec.denoiser)

    def trained_delta(path: str) -> torch.Tensor:
        layer = transformer.get_submodule(path)
        down, up = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        return (layer.scaling["default"] * up @ down).detach().float()

    def file_delta(key: str) -> torch.Tensor:
        down, up = tensors[f"{key}.lora_down.weight"], tensors[f"{key}.lora_up.weight"]
        return tensors[f"{key}.alpha"] / down.shape[0] * up @ down

    fused = file_delta("lora_unet_single_blocks_0_linear1")
    members = [f"single_transformer_blocks.0.{m}" for m in ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")]
    expected = torch.cat([trained_delta(m) for m in members])
    torch.testing.assert_close(fused, expected, atol=2e-3 * expected.abs().max().item(), rtol=0)  # fp16 file
    qkv = file_delta("lora_unet_double_blocks_0_txt_attn_qkv")
    members = [f"transformer_blocks.0.attn.add_{m}_proj" for m in "qkv"]
    expected = torch.cat([trained_delta(m) for m in members])
    torch.testing.assert_close(qkv, expected, atol=2e-3 * expected.abs().max().item(), rtol=0)


def test_stop_then_resume_equals_the_uninterrupted_run(finished_run, tmp_path):
    uninterrupted_folder, uninterrupted, _, _ = finished_run
    config = write_config(copy_sample(tmp_path), flux_config())

    def stop_at_13(event, stop):
        if event["type"] == "step" and event["step"] == 13:
            stop.request("request")

    first, _ = train_in_process(config, on_event=stop_at_13)
    stopped = first.of("stopped")[0]
    second, trainer = train_in_process(config, resume=stopped["state"])
    assert second.of("run_started")[0]["start_step"] == 13 and second.events[-1]["type"] == "finished"
    assert {f"{p.spec.name}_modules" for p in trainer.parts} == {"unet_modules", "te1_modules", "te3_modules"}
    losses = [s["loss"] for s in first.of("step") + second.of("step")]
    assert losses == pytest.approx([s["loss"] for s in uninterrupted.of("step")], abs=1e-6)
    resumed = load_file(tmp_path / "model" / "test_lora.safetensors")
    expected = load_file(uninterrupted_folder / "model" / "test_lora.safetensors")
    assert resumed.keys() == expected.keys()
    worst = max((resumed[k].float() - expected[k].float()).abs().max().item() for k in resumed)
    assert worst < 1e-6, worst


def test_cached_t5_outputs_are_reused_while_clip_l_trains(tmp_path, monkeypatch):
    """sd-scripts' rule: with CLIP-L's LoRA training, T5's outputs are still cached; CLIP-L runs live."""
    from engine.families.flux import Flux

    calls: list[tuple[str, tuple[str, ...]]] = []
    encode = Flux.encode_text

    def counting(self, part, model, captions, *rest):
        calls.append((part.name, tuple(captions)))
        return encode(self, part, model, captions, *rest)

    monkeypatch.setattr(Flux, "encode_text", counting)
    project = copy_sample(tmp_path)
    captions = {path.read_text().strip() for path in (project / "img").rglob("*.txt")}
    data = flux_config(dataset={"cache_text_encoder_outputs": "disk"}, training={"max_train_steps": 3})
    config = write_config(project, data)
    _, trainer = train_in_process(config)
    t5 = [c for part, batch in calls if part == "te3" for c in batch]
    clip = [c for part, batch in calls if part == "te1" for c in batch]
    assert sorted(t5) == sorted(captions)  # once per caption
    assert len(clip) > len(set(clip))  # trained: encoded at every step
    assert trainer.model.text_encoder_2.device.type == "cpu"
    assert len(list((project / "model" / ".text-cache").glob("*.safetensors"))) == len(captions)

    calls.clear()
    recorder, _ = train_in_process(config, overwrite=True)
    assert not [part for part, _ in calls if part == "te3"]  # every T5 row came from disk
    assert len(recorder.of("step")) == 3


@pytest.mark.parametrize("mode", ["sigma", "uniform", "sigmoid", "flux_shift"])
def test_every_timestep_sampling_and_prediction_type_trains(tmp_path, mode):
    prediction = {"sigma": "sigma_scaled", "uniform": "additive"}.get(mode, "raw")
    data = flux_config(
        training={
            "timestep_sampling": mode,
            "model_prediction_type": prediction,
            "weighting_scheme": "logit_normal" if mode == "sigma" else "uniform",
            "max_train_steps": 2,
        },
        dataset={"cache_latents": "off"},
    )
    recorder, _ = train_in_process(write_config(copy_sample(tmp_path), data))
    assert len(recorder.of("step")) == 2 and all(math.isfinite(s["loss"]) for s in recorder.of("step"))


def test_the_t5_attention_mask_hides_the_padding(tmp_path):
    """With apply_t5_attn_mask, what a padding token's state holds cannot change the prediction."""
    from engine.families.flux import T5_MASK, T5_STATES, Flux
    from loratui.config import load_config

    cfg = load_config(write_config(copy_sample(tmp_path), flux_config(model={"apply_t5_attn_mask": True})))
    family = Flux()
    model = family.load(cfg)
    cpu = torch.device("cpu")
    with torch.no_grad():
        text = {}
        for part in family.parts[1:]:
            text.update(family.encode_text(part, model, ["a red circle"], 1, cpu, lambda module: module))
        mask = text[T5_MASK]
        assert mask.shape == (1, 32) and 0 < mask.sum() < 32
        noisy = torch.randn(1, 16, 8, 8)
        sigma = torch.tensor([0.5])
        kwargs = family.conditioning(text, [], torch.float32)
        first = family.predict(model.transformer, noisy, sigma, kwargs)
        changed = dict(text)
        changed[T5_STATES] = torch.where(mask[..., None].bool(), text[T5_STATES], torch.randn_like(text[T5_STATES]))
        second = family.predict(model.transformer, noisy, sigma, family.conditioning(changed, [], torch.float32))
        torch.testing.assert_close(first, second)
        family.attention_mask = False  # without the mask the padding is attended to
        third = family.predict(model.transformer, noisy, sigma, family.conditioning(changed, [], torch.float32))
        assert not torch.allclose(first, third)


# --------------------------------------------------------------------------- the low-memory recipe
def low_memory_config(**sections) -> dict:
    """fp8 base weights and both blocks swapped, in bf16 with gradient checkpointing (block swap needs it)."""
    data = flux_config(
        model={"fp8_base": True},
        training={"mixed_precision": "bf16", "gradient_checkpointing": True, "blocks_to_swap": 2},
        dataset={"cache_text_encoder_outputs": "disk"},
        network={"train_unet_only": True},
    )
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return data


@pytest.fixture
def bf16_on_the_cpu(monkeypatch):
    # bf16 on the CPU, as tests/test_engine.py does for its numerics: loratui refuses it elsewhere.
    from loratui import preflight

    monkeypatch.setattr(preflight, "precision_problems", lambda precision, machine: [])


def test_fp8_base_and_block_swap_train_and_resume_exactly(tmp_path, bf16_on_the_cpu):
    from engine.low_precision import FP8_DTYPE

    config = write_config(copy_sample(tmp_path), low_memory_config())
    whole, trainer = train_in_process(config)
    steps = whole.of("step")
    assert len(steps) == 40 and all(math.isfinite(s["loss"]) for s in steps)
    evals = whole.of("eval")
    assert evals[-1]["loss"] < evals[0]["loss"], evals
    transformer = trainer.accelerator.unwrap_model(trainer.model.transformer)
    base = transformer.transformer_blocks[0].attn.to_q.base_layer
    assert base.weight.dtype == FP8_DTYPE  # stored in fp8, computed in bf16
    assert trainer.block_swap is not None and (trainer.block_swap.split.double, trainer.block_swap.split.single) == (
        1,
        1,
    )
    expected = load_file(tmp_path / "model" / "test_lora.safetensors")

    def stop_at_13(event, stop):
        if event["type"] == "step" and event["step"] == 13:
            stop.request("request")

    first, _ = train_in_process(config, on_event=stop_at_13, overwrite=True)
    second, _ = train_in_process(config, resume=first.of("stopped")[0]["state"], overwrite=True)
    losses = [s["loss"] for s in first.of("step") + second.of("step")]
    assert losses == pytest.approx([s["loss"] for s in steps], abs=1e-6)
    resumed = load_file(tmp_path / "model" / "test_lora.safetensors")
    worst = max((resumed[k].float() - expected[k].float()).abs().max().item() for k in resumed)
    assert worst < 1e-6, worst


def test_cpu_offload_of_checkpoints_gives_the_same_run(tmp_path, bf16_on_the_cpu):
    base = flux_config(training={"gradient_checkpointing": True, "max_train_steps": 3})
    plain, _ = train_in_process(write_config(copy_sample(tmp_path / "a"), base))
    offload = flux_config(training={"gradient_checkpointing": True, "max_train_steps": 3})
    offload["training"]["cpu_offload_checkpointing"] = True
    offloaded, _ = train_in_process(write_config(copy_sample(tmp_path / "b"), offload))
    assert [s["loss"] for s in offloaded.of("step")] == pytest.approx([s["loss"] for s in plain.of("step")], abs=1e-6)
