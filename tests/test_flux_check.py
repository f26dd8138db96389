"""`loratui check` on FLUX.1 configs: each setting sd-scripts would refuse, or that would not do what
the user meant, gets one line naming the setting and the fix, before any weights load; the FLUX.1
presets pass the check; the wizard shows the FLUX.1 fields on the Model step."""

from __future__ import annotations

import asyncio
import json
import shutil
import struct
from pathlib import Path

import pytest

from loratui import flux_blocks, preflight
from loratui.check import check_run, config_problems
from loratui.config import config_from_dict
from loratui.flux_blocks import FLUX1, FluxShape, blocks_to_swap_for_all, flux_shape, swapped_blocks
from loratui.params import BY_NAME
from loratui.tui.presets import PRESETS, PRESETS_BY_KEY, apply_preset

from .conftest import small_config, workers_done, write_config

A100 = preflight.Machine("NVIDIA A100", (8, 0))
NO_GPU = preflight.Machine(None, no_gpu="this machine has no NVIDIA GPU")


def flux_config(base_dir: Path, **sections) -> dict:
    """A FLUX.1 config on the built-in tiny model over the sample images."""
    data = small_config(model={"path": "loratui:tiny-flux", "family": "flux"}, optimizer={"text_encoder_lr": 0.0})
    for section, values in sections.items():
        data[section].update(values)
    return config_from_dict(data, base_dir)


def problems_at(cfg, where: str) -> list:
    return [problem for problem in config_problems(cfg) if problem.where == where]


@pytest.fixture
def gpu(monkeypatch):
    monkeypatch.setattr(preflight, "this_machine", lambda: A100)


@pytest.fixture
def cpu_only(monkeypatch):
    monkeypatch.setattr(preflight, "this_machine", lambda: NO_GPU)


def test_a_tiny_flux_config_is_ready(project: Path):
    checked = check_run(flux_config(project))
    assert checked.ok, [str(problem) for problem in checked.errors]


def test_image_sides_must_be_multiples_of_16(project: Path):
    (problem,) = problems_at(flux_config(project, dataset={"resolution": 1000}), "dataset.resolution")
    assert problem.severity == "error" and "multiple of 16" in problem.message and "use 992" in problem.fix
    # 1008 is a multiple of 16, not of 64: fine for FLUX.1 (no "multiple of 64" warning).
    assert not problems_at(flux_config(project, dataset={"resolution": 1008}), "dataset.resolution")
    odd = flux_config(project, dataset={"bucket_reso_steps": 24, "min_bucket_reso": 72})
    for where in ("dataset.bucket_reso_steps", "dataset.min_bucket_reso"):
        (problem,) = problems_at(odd, where)
        assert problem.severity == "error" and "multiple of 16" in problem.message
    # Without buckets the bucket sides are not used.
    no_buckets = flux_config(project, dataset={"enable_buckets": False, "min_bucket_reso": 72})
    assert not problems_at(no_buckets, "dataset.min_bucket_reso")


def test_regularisation_images_get_a_warning(project: Path):
    (problem,) = problems_at(flux_config(project, dataset={"reg_dir": "reg"}), "dataset.reg_dir")
    assert problem.severity == "warning" and 'reg_dir = ""' in problem.fix


def test_fp8_and_nf4_together_are_refused(project: Path, gpu):
    cfg = flux_config(project, model={"fp8_base": True, "nf4_base": True}, training={"mixed_precision": "bf16"})
    (problem,) = problems_at(cfg, "model.nf4_base")
    assert problem.severity == "error" and "both on" in problem.message


def test_fp8_without_mixed_precision_on_a_gpu_is_said(project: Path, monkeypatch):
    monkeypatch.setattr(preflight, "this_machine", lambda: A100)
    (problem,) = problems_at(flux_config(project, model={"fp8_base": True}), "training.mixed_precision")
    assert problem.severity == "warning" and 'mixed_precision = "bf16"' in problem.fix
    assert not problems_at(
        flux_config(project, model={"fp8_base": True}, training={"mixed_precision": "bf16"}), "training.mixed_precision"
    )
    # On a CPU fp16/bf16 cannot run; fp8 weights are computed in float32 there (the CPU test runs).
    monkeypatch.setattr(preflight, "this_machine", lambda: NO_GPU)
    assert check_run(flux_config(project, model={"fp8_base": True})).ok


def test_nf4_needs_bitsandbytes_and_a_cuda_gpu(project: Path, monkeypatch):
    monkeypatch.setattr(preflight, "this_machine", lambda: NO_GPU)
    (problem,) = problems_at(flux_config(project, model={"nf4_base": True}), "model.nf4_base")
    assert "needs a CUDA GPU" in problem.message and "nf4_base = false" in problem.fix
    monkeypatch.setattr(preflight, "this_machine", lambda: A100)
    ready = flux_config(project, model={"nf4_base": True}, training={"mixed_precision": "bf16"})
    monkeypatch.setattr(preflight, "installed", lambda package: package != "bitsandbytes")
    (problem,) = problems_at(ready, "model.nf4_base")
    assert "bitsandbytes, which is not installed" in problem.message and "pip install bitsandbytes" in problem.fix
    monkeypatch.setattr(preflight, "installed", lambda package: True)
    assert not problems_at(ready, "model.nf4_base")


def test_checkpoint_offload_rules(project: Path):
    with_swap = flux_config(project, training={"cpu_offload_checkpointing": True, "blocks_to_swap": 4})
    (problem,) = problems_at(with_swap, "training.cpu_offload_checkpointing")
    assert problem.severity == "error" and "blocks_to_swap 4" in problem.message
    unused = flux_config(project, training={"cpu_offload_checkpointing": True})
    (problem,) = problems_at(unused, "training.cpu_offload_checkpointing")
    assert problem.severity == "warning" and "gradient_checkpointing = true" in problem.fix
    on = flux_config(project, training={"cpu_offload_checkpointing": True, "gradient_checkpointing": True})
    assert not problems_at(on, "training.cpu_offload_checkpointing")


def test_block_swap_splits_as_the_engine_does():
    from engine.block_swap import swap_split

    for shape in (FLUX1, FluxShape(1, 1), FluxShape(5, 10)):
        for blocks in range(0, 40):
            split = swap_split(blocks, shape.double_blocks, shape.single_blocks)
            assert swapped_blocks(blocks, shape) == (split.double, split.single), (shape, blocks)
    # FLUX.1 swaps every block at 38; training.blocks_to_swap stops at sd-scripts' 35 (two of each stay).
    assert blocks_to_swap_for_all(FLUX1) == 38 and BY_NAME["training.blocks_to_swap"].maximum == 35
    assert blocks_to_swap_for_all(FluxShape(1, 1)) == 2
    assert blocks_to_swap_for_all(FluxShape(5, 10)) == 10


def test_blocks_to_swap_above_what_the_tiny_model_has(project: Path):
    swap = {"gradient_checkpointing": True}
    assert not problems_at(flux_config(project, training={**swap, "blocks_to_swap": 2}), "training.blocks_to_swap")
    (problem,) = problems_at(flux_config(project, training={**swap, "blocks_to_swap": 16}), "training.blocks_to_swap")
    assert problem.severity == "warning" and "1 double and 1 single" in problem.message
    assert problem.fix == "set blocks_to_swap = 2 or less"


def test_block_swap_needs_checkpointing_and_no_nf4(project: Path, gpu):
    (problem,) = problems_at(flux_config(project, training={"blocks_to_swap": 2}), "training.blocks_to_swap")
    assert problem.severity == "error" and "gradient_checkpointing = true" in problem.fix
    nf4 = flux_config(
        project,
        model={"nf4_base": True},
        training={"blocks_to_swap": 2, "gradient_checkpointing": True, "mixed_precision": "bf16"},
    )
    (problem,) = [p for p in problems_at(nf4, "training.blocks_to_swap") if p.severity == "error"]
    assert "NF4" in problem.message and "fp8_base = true" in problem.fix


def test_the_builtin_shape_is_the_engines():
    from engine.tiny_flux import TINY_FLUX_NAME, ensure_tiny_flux

    built = flux_shape("a folder", ensure_tiny_flux())
    assert built is not None and flux_blocks.BUILTIN_FLUX_SHAPES[TINY_FLUX_NAME] == built


def test_shapes_are_read_from_a_folder_config_and_a_bfl_file_header(tmp_path: Path):
    folder = tmp_path / "flux"
    (folder / "transformer").mkdir(parents=True)
    config = {"num_layers": 19, "num_single_layers": 38, "guidance_embeds": False}
    (folder / "transformer" / "config.json").write_text(json.dumps(config))
    assert flux_shape(str(folder), folder) == FluxShape(19, 38)
    names = [f"model.diffusion_model.double_blocks.{i}.img_attn.qkv.weight" for i in range(3)]
    names += [f"model.diffusion_model.single_blocks.{i}.linear1.{end}" for i in range(5) for end in ("weight", "bias")]
    header = {name: {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]} for i, name in enumerate(names)}
    raw = json.dumps(header).encode()
    path = tmp_path / "flux1-dev.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(4 * len(names)))
    assert flux_shape(str(path), path) == FluxShape(3, 5)
    assert flux_shape(str(tmp_path / "missing"), tmp_path / "missing") is None


def test_schnell_ignores_guidance_and_takes_256_t5_tokens(project: Path):
    schnell = {"flux_variant": "schnell"}
    guided = flux_config(project, model=schnell, training={"guidance_scale": 1.0})
    (note,) = problems_at(guided, "training.guidance_scale")
    assert note.severity == "note" and "schnell has no guidance input" in note.message
    assert not problems_at(flux_config(project, training={"guidance_scale": 1.0}), "training.guidance_scale")  # dev
    long = flux_config(project, model={**schnell, "t5xxl_max_token_length": 512})
    (problem,) = problems_at(long, "model.t5xxl_max_token_length")
    assert problem.severity == "warning" and "t5xxl_max_token_length = 0" in problem.fix
    enough = flux_config(project, model={**schnell, "t5xxl_max_token_length": 256})
    assert not problems_at(enough, "model.t5xxl_max_token_length")


def test_cached_text_outputs_say_what_is_cached(project: Path):
    frozen = flux_config(project, network={"train_unet_only": True}, dataset={"cache_text_encoder_outputs": "disk"})
    (note,) = problems_at(frozen, "dataset.cache_text_encoder_outputs")
    assert note.severity == "note" and "T5-XXL and CLIP-L outputs are cached on disk" in note.message
    # CLIP-L trains: T5-XXL stays cached and CLIP-L runs at every step (sd-scripts does the same),
    # which is no error, unlike SDXL's encoders.
    clip_trains = flux_config(
        project, dataset={"cache_text_encoder_outputs": "memory"}, optimizer={"text_encoder_lr": 5e-5}
    )
    (note,) = problems_at(clip_trains, "dataset.cache_text_encoder_outputs")
    assert note.severity == "note" and "T5-XXL outputs are cached in memory; CLIP-L trains" in note.message
    assert check_run(clip_trains).ok


@pytest.mark.parametrize("key", [preset.key for preset in PRESETS if preset.family == "flux"])
def test_the_flux_presets_pass_the_check(project: Path, gpu, key: str):
    preset = PRESETS_BY_KEY[key]
    cfg = apply_preset(flux_config(project), preset)
    assert cfg.model.family == "flux" and cfg.network.train_unet_only
    assert cfg.training.blocks_to_swap <= BY_NAME["training.blocks_to_swap"].maximum
    if cfg.training.blocks_to_swap:
        assert cfg.training.gradient_checkpointing and not cfg.model.nf4_base
    checked = check_run(cfg)
    assert checked.ok, [str(problem) for problem in checked.errors]


def test_the_seed_recipe_gives_the_guides_2600_steps(tmp_path: Path, gpu):
    """13 images of 1024 px at 1 repeat, batch 1, 200 epochs: 2600 steps, as the seed guide says."""
    from PIL import Image

    images = tmp_path / "img" / "1_ohwx woman"
    images.mkdir(parents=True)
    for index in range(13):
        Image.new("RGB", (1024, 1024), (index * 9, 80, 140)).save(images / f"{index:02d}.png")
    cfg = apply_preset(flux_config(tmp_path), PRESETS_BY_KEY["flux-person"])
    checked = check_run(cfg)
    assert checked.ok and checked.schedule is not None and checked.schedule.total_steps == 2600
    assert (cfg.network.rank, cfg.model.fp8_base, cfg.dataset.reg_dir) == (8, True, "")


# ---------------------------------------------------------------------------------------------
# The wizard


@pytest.mark.usefixtures("private_tui_settings")
def test_the_wizard_shows_the_flux_fields_on_the_model_step(project: Path):
    from textual.widgets import Select

    from loratui.tui import make_edit_app

    config_path = write_config(project, small_config())
    app = make_edit_app(config_path)

    def shown(field: str) -> bool:
        return app.screen.query_one(f"#row-f-{field.replace('.', '-').replace('_', '-')}").display

    flux_fields = ("model.ae_path", "model.clip_l_path", "model.t5xxl_path", "model.fp8_base", "model.flux_variant")

    async def scenario():
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause(0.4)
            await workers_done(app)
            assert not any(shown(field) for field in flux_fields)
            family = app.screen.query_one("#f-model-family", Select)
            family.focus()
            await pilot.press("enter", "down", "down", "down", "enter")  # sd1 -> sd2 -> sdxl -> flux
            await pilot.pause()
            assert app.screen.cfg.model.family == "flux"
            assert all(shown(field) for field in flux_fields)
            assert not shown("model.clip_skip") and not shown("model.v_prediction")
            # The Training step shows the flow settings, not the UNet's noise settings.
            await pilot.press("pagedown", "pagedown")
            await pilot.pause()
            assert shown("training.timestep_sampling") and shown("training.blocks_to_swap")
            assert not shown("training.noise_offset") and not shown("training.min_snr_gamma")

    asyncio.run(scenario())


@pytest.mark.usefixtures("private_tui_settings")
def test_the_flux_files_on_the_model_step_at_80x24(snap_compare, tmp_path: Path):
    from loratui.config import save_config
    from loratui.tui import make_edit_app
    from loratui.tui.entry import new_project_config, prepare_new_project

    project = tmp_path / "mylora"
    shutil.copytree(Path(__file__).resolve().parent.parent / "sample_project" / "img", project / "img")
    config_path = prepare_new_project(project)
    save_config(apply_preset(new_project_config(config_path), PRESETS_BY_KEY["tiny-flux-test"]), config_path)

    async def settle_on_the_ae_file(pilot) -> None:
        await pilot.pause(0.4)
        await workers_done(pilot.app)
        pilot.app.screen.query_one("#f-model-ae-path").focus()  # the FLUX.1 files, below the family
        await pilot.pause(0.2)

    assert snap_compare(make_edit_app(config_path), terminal_size=(80, 24), run_before=settle_on_the_ae_file)


# --------------------------------------------------------------------------- rank against the layers' widths
def test_a_rank_above_the_transformers_width_is_refused_before_anything_loads(project: Path):
    """tiny-flux's blocks are 64 wide (the engine refuses a higher rank once it has measured them: the check
    says so first, as for the other families)."""
    refused = problems_at(flux_config(project, network={"rank": 96}), "network.rank")
    assert [p.severity for p in refused] == ["error"]
    assert "the widest is 64" in refused[0].message
    assert not problems_at(flux_config(project, network={"rank": 64}), "network.rank")


@pytest.mark.slow
def test_the_flux_built_ins_widths_are_what_the_engine_measures():
    import torch
    from diffusers import FluxTransformer2DModel
    from transformers import CLIPTextModel

    from engine import flux_random
    from engine.flux_names import FLUX_BLOCKS
    from engine.lora import TEXT_ENCODER_BLOCKS, find_targets, widest_targets
    from engine.tiny_flux import ensure_tiny_flux
    from engine.tiny_model import byte_level_vocab

    folder = ensure_tiny_flux()
    components = flux_random._components(byte_level_vocab()[0])
    with torch.device("meta"):  # FLUX.1's shapes without its 24 GB
        big = (components["transformer"](), components["text_encoder"]())
    models = {
        "loratui:tiny-flux": (
            FluxTransformer2DModel.from_pretrained(folder / "transformer"),
            CLIPTextModel.from_pretrained(folder / "text_encoder"),
        ),
        "loratui:flux-random": big,
    }
    assert set(models) == set(preflight.BUILTIN_FLUX_LAYER_WIDTHS)
    for name, (transformer, clip) in models.items():
        widths = preflight.BUILTIN_FLUX_LAYER_WIDTHS[name]
        assert preflight.flux_layer_widths(dict(transformer.config), clip.config.to_dict()) == widths, name
        alone = widest_targets(find_targets(transformer, FLUX_BLOCKS, 8, 4.0))
        assert alone == preflight.widest_trained(widths, 0, False), name
        both = widest_targets(
            find_targets(transformer, FLUX_BLOCKS, 8, 4.0) + find_targets(clip, TEXT_ENCODER_BLOCKS, 8, 4.0)
        )
        assert both == preflight.widest_trained(widths, 0, True), name
