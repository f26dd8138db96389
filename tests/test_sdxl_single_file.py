"""SDXL single-file checkpoints, offline: what a file is, told from its keys before any weight
loads; the configs loratui ships with the tokenizers found on this machine; and the tiny SDXL model
written as ``sd_xl_base_1.0.safetensors`` is (see ``tests/ldm_checkpoint.py``), loaded by diffusers'
own ``StableDiffusionXLPipeline.from_single_file`` through the engine's loader.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from engine.model_loading import load_base_model
from engine.tiny_sdxl import TEXT_WIDTH_1, TEXT_WIDTH_2, ensure_tiny_sdxl
from loratui import checkpoint_configs, model_detect, preflight
from loratui.cli import main
from loratui.errors import Problem, UserError
from tests.conftest import small_config, write_config
from tests.ldm_checkpoint import write_ldm_checkpoint, write_model_configs, write_sdxl_checkpoint

SDXL_REPO = "stabilityai/stable-diffusion-xl-base-1.0"
WEIGHTS = {
    "unet": "unet/diffusion_pytorch_model.safetensors",
    "vae": "vae/diffusion_pytorch_model.safetensors",
    "text_encoder": "text_encoder/model.safetensors",
    "text_encoder_2": "text_encoder_2/model.safetensors",
}
# Key names of each kind of checkpoint, a few of each part, as the original files have them.
UNET = ["model.diffusion_model.input_blocks.0.0.weight", "model.diffusion_model.out.2.weight"]
SDXL_UNET = [*UNET, "model.diffusion_model.label_emb.0.0.weight"]
VAE = ["first_stage_model.encoder.conv_in.weight", "first_stage_model.decoder.conv_out.weight"]
SD1_TE = ["cond_stage_model.transformer.text_model.embeddings.position_embedding.weight"]
SD2_TE = [
    "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight",
    "cond_stage_model.model.ln_final.weight",
]
SDXL_TE1 = ["conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight"]
SDXL_TE2 = [
    "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias",
    "conditioner.embedders.1.model.positional_embedding",
    "conditioner.embedders.1.model.text_projection",
]
REFINER_TE = ["conditioner.embedders.0.model.transformer.resblocks.9.mlp.c_proj.bias"]
FLUX = ["double_blocks.0.img_attn.qkv.weight", "single_blocks.0.linear1.weight", "final_layer.linear.weight"]


def _header_only(path: Path, names: list[str], shapes: dict[str, list[int]] | None = None) -> Path:
    """A valid safetensors file whose tensors have these names: empty, unless ``shapes`` says
    otherwise (zero-filled F32). Only the header matters to the check."""
    entries, offset = {}, 0
    for name in names:
        shape = (shapes or {}).get(name, [0])
        size = 4
        for side in shape:
            size *= side
        entries[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(entries).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)
    return path


# ---------------------------------------------------------------------------------------------
# What a checkpoint is, from its keys.


@pytest.mark.parametrize(
    ("names", "family"),
    [
        (UNET + VAE + SD1_TE, "sd1"),
        (UNET + VAE + SD2_TE, "sd2"),
        (SDXL_UNET + VAE + SDXL_TE1 + SDXL_TE2, "sdxl"),
        (SDXL_UNET + VAE + REFINER_TE, "sdxl-refiner"),
        (FLUX, "flux"),
        (["model.diffusion_model." + name for name in FLUX], "flux"),  # as ComfyUI saves it
        (["single_transformer_blocks.0.attn.to_q.weight", "transformer_blocks.0.attn.to_q.weight"], "flux"),
        (VAE, None),
        (["emb_params"], None),
    ],
    ids=["sd1", "sd2", "sdxl", "refiner", "flux", "flux-prefixed", "flux-diffusers", "vae", "embedding"],
)
def test_the_family_of_a_checkpoint_from_its_keys(tmp_path, names, family):
    kind = model_detect.checkpoint_kind(_header_only(tmp_path / "model.safetensors", names))
    assert kind.family == family
    assert kind.missing == ()


@pytest.mark.parametrize(
    ("left_out", "missing"),
    [
        (SDXL_TE2, ["text encoder 2, OpenCLIP ViT-bigG (conditioner.embedders.1.model.*)"]),
        (SDXL_TE1, ["text encoder 1, CLIP ViT-L (conditioner.embedders.0.transformer.*)"]),
        (SDXL_TE1 + SDXL_TE2, ["text encoder 1", "text encoder 2"]),
        (VAE, ["the VAE (first_stage_model.*)"]),
    ],
    ids=["no-te2", "no-te1", "unet-and-vae-only", "no-vae"],
)
def test_an_sdxl_checkpoint_missing_a_part(tmp_path, left_out, missing):
    names = [name for name in SDXL_UNET + VAE + SDXL_TE1 + SDXL_TE2 if name not in left_out]
    kind = model_detect.checkpoint_kind(_header_only(tmp_path / "model.safetensors", names))
    assert kind.family == "sdxl"
    assert len(kind.missing) == len(missing)
    for found, expected in zip(kind.missing, missing, strict=True):
        assert found.startswith(expected) or expected in found


def test_an_sd_unet_alone_is_told_by_the_width_of_the_text_it_attends_to(tmp_path):
    key = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
    for width, family in ((768, "sd1"), (1024, "sd2"), (512, None)):
        path = _header_only(tmp_path / f"unet-{width}.safetensors", [*UNET, key], {key: [320, width]})
        kind = model_detect.checkpoint_kind(path)
        assert (kind.family, kind.has_unet) == (family, True)


def test_the_tiny_checkpoints_written_in_the_original_layouts_are_detected(sdxl_checkpoint, tmp_path):
    from engine.tiny_model import ensure_tiny_model

    assert model_detect.checkpoint_kind(sdxl_checkpoint) == model_detect.CheckpointKind("sdxl", (), True)
    write_ldm_checkpoint(ensure_tiny_model(), tmp_path / "sd1.safetensors")
    assert model_detect.checkpoint_kind(tmp_path / "sd1.safetensors").family == "sd1"


# ---------------------------------------------------------------------------------------------
# The tiny SDXL model as one original-layout file.


@pytest.fixture(scope="module")
def sdxl_checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sdxl-ckpt") / "tiny-sdxl.safetensors"
    write_sdxl_checkpoint(ensure_tiny_sdxl(), path)
    return path


@pytest.fixture(scope="module")
def tiny_configs(tmp_path_factory) -> Path:
    """The tiny model's configs and both tokenizers without weights, as `hf download REPO --include
    '*.json' '*.txt'` gives them for SDXL base: a complete diffusers SDXL folder, used as it is."""
    return write_model_configs(ensure_tiny_sdxl(), tmp_path_factory.mktemp("tiny-sdxl-configs"))


def test_the_checkpoint_has_the_layout_of_sd_xl_base(sdxl_checkpoint):
    with safe_open(str(sdxl_checkpoint), "pt") as handle:
        keys = set(handle.keys())
        projection = handle.get_slice("conditioner.embedders.1.model.text_projection").get_shape()
        fused = handle.get_slice(
            "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"
        ).get_shape()
    assert {key.split(".")[0] for key in keys} == {"model", "first_stage_model", "conditioner"}
    assert "model.diffusion_model.label_emb.0.0.weight" in keys and "model.diffusion_model.label_emb.0.2.bias" in keys
    assert "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight" in keys
    assert "model.diffusion_model.input_blocks.7.1.transformer_blocks.1.attn1.to_q.weight" in keys  # depth 2
    assert "conditioner.embedders.0.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight" in keys
    assert "conditioner.embedders.1.model.transformer.resblocks.0.mlp.c_fc.weight" in keys
    assert "conditioner.embedders.1.model.ln_final.weight" in keys
    assert fused == [3 * TEXT_WIDTH_2, TEXT_WIDTH_2]  # q, k and v in one
    assert projection == [TEXT_WIDTH_2, TEXT_WIDTH_2]
    # Every diffusers weight has exactly one original key, but q/k/v fuse 3 x 2 into 2 per layer,
    # and OpenCLIP's logit_scale has no diffusers twin.
    diffusers_keys = sum(len(load_file(ensure_tiny_sdxl() / file)) for file in WEIGHTS.values())
    layers = json.loads((ensure_tiny_sdxl() / "text_encoder_2" / "config.json").read_text())["num_hidden_layers"]
    assert len(keys) == diffusers_keys - 4 * layers + 1


def test_the_writer_agrees_with_diffusers_own_conversion(sdxl_checkpoint):
    """diffusers' converters read the file back into the diffusers names and values of the folder."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_open_clip_checkpoint
    from transformers import CLIPTextModelWithProjection

    checkpoint = load_file(sdxl_checkpoint)
    unet_config = json.loads((ensure_tiny_sdxl() / "unet" / "config.json").read_text())
    unet = convert_ldm_unet_checkpoint(checkpoint, unet_config)
    expected = load_file(ensure_tiny_sdxl() / WEIGHTS["unet"])
    assert unet.keys() == expected.keys()
    assert all(torch.equal(unet[key], tensor) for key, tensor in expected.items())
    encoder = CLIPTextModelWithProjection.from_pretrained(ensure_tiny_sdxl() / "text_encoder_2")
    text = convert_open_clip_checkpoint(encoder, checkpoint, prefix="conditioner.embedders.1.model.")
    expected = load_file(ensure_tiny_sdxl() / WEIGHTS["text_encoder_2"])
    assert text.keys() == expected.keys()
    assert all(torch.equal(text[key], tensor) for key, tensor in expected.items())


def _unet_inputs(batch: int = 2) -> tuple:
    generator = torch.Generator().manual_seed(3)
    latents = torch.randn(batch, 4, 16, 16, generator=generator)
    text = torch.randn(batch, 77, TEXT_WIDTH_1 + TEXT_WIDTH_2, generator=generator)
    pooled = torch.randn(batch, TEXT_WIDTH_2, generator=generator)
    time_ids = torch.tensor([[1024.0, 768.0, 0.0, 32.0, 1024.0, 1024.0]] * batch)
    return latents, torch.tensor([10, 700]), text, {"text_embeds": pooled, "time_ids": time_ids}


def test_the_single_file_loads_through_diffusers_as_the_folder_model(sdxl_checkpoint, tiny_configs):
    loaded = load_base_model(str(sdxl_checkpoint), sdxl_checkpoint, "sdxl", False, tiny_configs / "tokenizer")
    folder = load_base_model("loratui:tiny-sdxl", Path("unused"), "sdxl", False, None)
    assert loaded.source == sdxl_checkpoint and loaded.name == sdxl_checkpoint.name
    latents, timesteps, text, added = _unet_inputs()
    with torch.no_grad():
        from_file = loaded.unet(latents, timesteps, text, added_cond_kwargs=added).sample
        from_folder = folder.unet(latents, timesteps, text, added_cond_kwargs=added).sample
    assert torch.allclose(from_file, from_folder, atol=1e-5, rtol=0)
    for part, file in WEIGHTS.items():  # every weight, not only the UNet's
        expected, state = load_file(ensure_tiny_sdxl() / file), getattr(loaded, part).state_dict()
        differing = [key for key, tensor in expected.items() if not torch.equal(state[key], tensor)]
        assert not differing, (part, differing[:5])
    ids = loaded.tokenizer_2("ohwx shape", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        pooled = loaded.text_encoder_2(ids).text_embeds
        # Equal weights, but q/k/v sliced out of one fused tensor may take another matmul path.
        assert torch.allclose(pooled, folder.text_encoder_2(ids).text_embeds, atol=1e-5, rtol=0)
    assert loaded.tokenizer_2.pad_token == "!"  # SDXL's second tokenizer pads with "!"
    assert loaded.noise_scheduler.config.beta_schedule == "scaled_linear"


def test_an_sdxl_checkpoint_given_as_sd1_is_refused_by_the_engine_before_loading(sdxl_checkpoint, tiny_configs):
    with pytest.raises(UserError) as info:
        load_base_model(str(sdxl_checkpoint), sdxl_checkpoint, "sd1", False, tiny_configs / "tokenizer")
    assert info.value.where == "model.family" and info.value.fix == 'set model.family = "sdxl"'


def test_a_checkpoint_without_text_encoder_2_is_refused_by_the_engine(tmp_path, tiny_configs):
    path = tmp_path / "no-te2.safetensors"
    write_sdxl_checkpoint(ensure_tiny_sdxl(), path, leave_out=("text_encoder_2",))
    with pytest.raises(UserError) as info:
        load_base_model(str(path), path, "sdxl", False, tiny_configs)
    assert info.value.where == "model.path" and "without text encoder 2" in info.value.message


def test_a_weight_the_file_lacks_is_named_not_left_empty(sdxl_checkpoint, tmp_path, tiny_configs):
    """diffusers fills each part from the file and leaves a weight the file lacks on the meta device."""
    checkpoint = load_file(sdxl_checkpoint)
    del checkpoint["conditioner.embedders.1.model.text_projection"]
    path = tmp_path / "no-projection.safetensors"
    save_file(checkpoint, str(path))
    with pytest.raises(UserError) as info:
        load_base_model(str(path), path, "sdxl", False, tiny_configs)
    assert info.value.where == "model.path"
    assert "text_encoder_2" in info.value.message and "text_projection.weight" in info.value.message


# ---------------------------------------------------------------------------------------------
# The configs loratui ships, and the tokenizers beside them.

SHIPPED_PARAMETERS = {"unet": 2_567_463_684, "text_encoder": 123_060_480, "text_encoder_2": 694_659_840}


def test_the_shipped_configs_build_sdxl_base_with_its_published_parameter_counts():
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    folder = checkpoint_configs.shipped_configs()
    assert StableDiffusionXLPipeline.load_config(folder)["_class_name"] == "StableDiffusionXLPipeline"
    with init_empty_weights():
        parts = {
            "unet": UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet")),
            "vae": AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae")),
            "text_encoder": CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder")),
            "text_encoder_2": CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(folder / "text_encoder_2")),
        }
    counts = {part: sum(p.numel() for p in module.parameters()) for part, module in parts.items()}
    assert {part: counts[part] for part in SHIPPED_PARAMETERS} == SHIPPED_PARAMETERS
    assert parts["vae"].config.scaling_factor == 0.13025
    assert parts["unet"].config.cross_attention_dim == 768 + 1280  # the two encoders side by side
    scheduler = EulerDiscreteScheduler.from_config(EulerDiscreteScheduler.load_config(folder / "scheduler"))
    assert (scheduler.config.beta_start, scheduler.config.beta_end) == (0.00085, 0.012)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """loratui's cache and an empty Hugging Face cache, private to the test."""
    monkeypatch.setenv("LORATUI_CACHE_DIR", str(tmp_path / "loratui-cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-hub"))
    return tmp_path / "loratui-cache"


def _tokenizers_only(folder: Path) -> Path:
    """SDXL's two tokenizer folders and nothing else (what `--include 'tokenizer/*' 'tokenizer_2/*'` fetches)."""
    for name in ("tokenizer", "tokenizer_2"):
        shutil.copytree(ensure_tiny_sdxl() / name, folder / name)
    return folder


def test_the_shipped_configs_and_a_folders_tokenizers_become_one_folder(cache, tmp_path):
    from transformers import CLIPTokenizer

    tokenizers = _tokenizers_only(tmp_path / "tokenizers")
    found = preflight.single_file_configs("sdxl", tokenizers)
    assert isinstance(found, Path) and found.is_relative_to(cache)
    shipped = checkpoint_configs.shipped_configs()
    for name in checkpoint_configs.SDXL_CONFIG_FILES:
        assert (found / name).read_bytes() == (shipped / name).read_bytes()
    assert CLIPTokenizer.from_pretrained(found / "tokenizer_2").pad_token == "!"
    # Found again, from the tokenizer/ folder as for SD, without a second copy.
    assert preflight.single_file_configs("sdxl", tokenizers / "tokenizer") == found
    assert [path.name for path in found.parent.iterdir()] == [found.name]
    # Other tokenizers, another folder.
    (tokenizers / "tokenizer_2" / "tokenizer_config.json").write_text("{}")
    assert preflight.single_file_configs("sdxl", tokenizers) != found


def test_a_complete_diffusers_sdxl_folder_is_used_as_it_is(cache, tiny_configs):
    assert preflight.single_file_configs("sdxl", tiny_configs) == tiny_configs
    assert preflight.single_file_configs("sdxl", tiny_configs / "tokenizer") == tiny_configs
    assert not cache.exists()


def test_the_tokenizers_in_the_hugging_face_cache_are_found(cache, tmp_path):
    storage = tmp_path / "hf-hub" / ("models--" + SDXL_REPO.replace("/", "--"))
    (storage / "refs").mkdir(parents=True)
    (storage / "refs" / "main").write_text("0123abc")
    _tokenizers_only(storage / "snapshots" / "0123abc")
    found = preflight.single_file_configs("sdxl", None)
    assert isinstance(found, Path) and (found / "unet" / "config.json").is_file()
    assert (found / "tokenizer" / "tokenizer.json").is_file()


def test_without_tokenizers_the_problem_gives_the_download_command(cache, tmp_path):
    problem = preflight.single_file_configs("sdxl", None)
    assert isinstance(problem, Problem) and problem.where == "model.path"
    assert f"hf download {SDXL_REPO} --include 'tokenizer/*' 'tokenizer_2/*'" in problem.fix
    half = tmp_path / "half"
    shutil.copytree(ensure_tiny_sdxl() / "tokenizer", half / "tokenizer")
    problem = preflight.single_file_configs("sdxl", half)
    assert isinstance(problem, Problem) and problem.where == "model.tokenizer"
    assert "no tokenizer_2/ folder" in problem.message and "tokenizer_2/" in problem.fix


# ---------------------------------------------------------------------------------------------
# `loratui check`: one line per mistake, before any weight loads.


def _check(project: Path, capsys, **model) -> tuple[int, list[str]]:
    config = write_config(project, small_config(model=model))
    code = main(["check", str(config)])
    out = capsys.readouterr()
    return code, (out.out + out.err).splitlines()


def _only_error(lines: list[str], needle: str) -> str:
    """The one error line of the report, which must hold ``needle``."""
    errors = [line for line in lines if line.lstrip().startswith("error ")]
    assert len(errors) == 1 and needle in errors[0], "\n".join(lines)
    return errors[0]


@pytest.mark.parametrize(
    ("names", "family", "where", "says", "fix"),
    [
        (FLUX, "sdxl", "model.family", 'is a FLUX.1 checkpoint, but model.family is "sdxl"', 'model.family = "flux"'),
        (
            UNET + VAE + SD1_TE,
            "sdxl",
            "model.family",
            'is an SD 1.x checkpoint, but model.family is "sdxl"',
            'model.family = "sd1"',
        ),
        (
            SDXL_UNET + VAE + SDXL_TE1 + SDXL_TE2,
            "sd1",
            "model.family",
            "is an SDXL checkpoint",
            'model.family = "sdxl"',
        ),
        (
            SDXL_UNET + VAE + SDXL_TE1 + SDXL_TE2,
            "sd2",
            "model.family",
            "is an SDXL checkpoint",
            'model.family = "sdxl"',
        ),
        (
            SDXL_UNET + VAE + SDXL_TE1,
            "sdxl",
            "model.path",
            "is an SDXL checkpoint without text encoder 2",
            "complete SDXL checkpoint",
        ),
        (SDXL_UNET + VAE + REFINER_TE, "sdxl", "model.path", "is the SDXL refiner", "SDXL base model"),
    ],
    ids=["flux-as-sdxl", "sd1-as-sdxl", "sdxl-as-sd1", "sdxl-as-sd2", "sdxl-without-te2", "refiner"],
)
def test_check_names_each_wrong_checkpoint_in_one_line(project, capsys, cache, names, family, where, says, fix):
    checkpoint = _header_only(project / "model.safetensors", names)
    code, lines = _check(project, capsys, path=str(checkpoint), family=family)
    assert code != 0
    line = _only_error(lines, "model.safetensors")
    assert f"{where}: model.safetensors {says}" in line and "(fix: " in line and fix in line
    assert not any("Traceback" in line for line in lines)


def test_check_without_tokenizers_prints_the_download_command(project, capsys, cache, sdxl_checkpoint):
    code, lines = _check(project, capsys, path=str(sdxl_checkpoint), family="sdxl")
    assert code != 0
    line = _only_error(lines, "hf download")
    assert line.count("model.path:") == 1 and "tokenizers" in line
    assert f"hf download {SDXL_REPO} --include 'tokenizer/*' 'tokenizer_2/*'" in line


def test_check_passes_the_tiny_sdxl_checkpoint_with_its_configs(project, capsys, cache, sdxl_checkpoint, tiny_configs):
    code, lines = _check(project, capsys, path=str(sdxl_checkpoint), family="sdxl", tokenizer=str(tiny_configs))
    assert code == 0, "\n".join(lines)
    assert any("OK: ready to train" in line for line in lines)


def test_check_passes_an_sdxl_checkpoint_with_the_shipped_configs_and_a_tokenizer_folder(project, capsys, cache):
    attention = "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"
    names = [*SDXL_UNET, attention, *VAE, *SDXL_TE1, *SDXL_TE2]
    checkpoint = _header_only(project / "sd_xl_base_1.0.safetensors", names, {attention: [640, 2048]})
    tokenizers = _tokenizers_only(project / "sdxl-tokenizers")
    code, lines = _check(project, capsys, path=str(checkpoint), family="sdxl", tokenizer=str(tokenizers))
    assert code == 0, "\n".join(lines)
    assert (cache / "model_configs").is_dir()


# ---------------------------------------------------------------------------------------------
# Training from the single file, end to end.


def test_a_run_trains_from_the_sdxl_single_file_and_writes_an_sdxl_lora(project, cache, sdxl_checkpoint, tiny_configs):
    """What a user with sd_xl_base_1.0.safetensors does: model.path at the file, model.tokenizer at
    a folder of configs and tokenizers; the run trains and its file is an SDXL LoRA."""
    from tests.conftest import train_in_process

    data = small_config(
        model={"path": str(sdxl_checkpoint), "family": "sdxl", "tokenizer": str(tiny_configs)},
        dataset={"resolution": 64, "min_bucket_reso": 64, "max_bucket_reso": 128, "bucket_reso_steps": 32},
        training={"max_train_steps": 3},
        optimizer={"unet_lr": 1e-3, "text_encoder_lr": 1e-3, "text_encoder_2_lr": 1e-3},
    )
    recorder, _ = train_in_process(write_config(project, data))
    losses = [event["loss"] for event in recorder.of("step")]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    path = Path(recorder.of("finished")[0]["path"])
    with safe_open(str(path), framework="pt") as handle:
        keys, metadata = list(handle.keys()), handle.metadata()
    prefixes = {key.split("_", 2)[0] + "_" + key.split("_", 2)[1] for key in keys}
    assert prefixes == {"lora_unet", "lora_te1", "lora_te2"}
    assert any(key.startswith("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.") for key in keys)
    assert metadata["ss_base_model_version"] == "sdxl_base_v1-0"
    assert metadata["ss_sd_model_name"] == sdxl_checkpoint.name
