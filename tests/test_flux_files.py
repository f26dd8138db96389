"""FLUX.1 from the four files users have (engine/flux_files.py, loratui/flux_files.py), offline.

The files are made here from the built-in ``loratui:tiny-flux``: its diffusers transformer written in
Black Forest Labs' names (fused q/k/v, the final modulation's halves swapped), its VAE in BFL's AE names,
its CLIP and T5 as they are (Hugging Face names, as clip_l.safetensors and t5xxl_fp16.safetensors
are). The renaming is written out here on its own, from sd-scripts' ``BFL_TO_DIFFUSERS_MAP``
(library/flux_utils.py) and diffusers' LDM VAE names, so that the loader is not checked against itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from engine.flux_files import bfl_to_diffusers, load_flux_files
from engine.tiny_flux import ensure_tiny_flux
from loratui import cli, flux_files, model_detect, preflight
from loratui.config import load_config
from loratui.errors import UserError

from .conftest import small_config, write_config

# ---------------------------------------------------------------------------------------------
# diffusers -> BFL, written out (sd-scripts' table read the other way).

_TOP = {
    "time_in.in_layer": ["time_text_embed.timestep_embedder.linear_1"],
    "time_in.out_layer": ["time_text_embed.timestep_embedder.linear_2"],
    "vector_in.in_layer": ["time_text_embed.text_embedder.linear_1"],
    "vector_in.out_layer": ["time_text_embed.text_embedder.linear_2"],
    "guidance_in.in_layer": ["time_text_embed.guidance_embedder.linear_1"],
    "guidance_in.out_layer": ["time_text_embed.guidance_embedder.linear_2"],
    "txt_in": ["context_embedder"],
    "img_in": ["x_embedder"],
    "final_layer.linear": ["proj_out"],
    "final_layer.adaLN_modulation.1": ["norm_out.linear"],
}
_DOUBLE = {
    "img_mod.lin": ["norm1.linear"],
    "txt_mod.lin": ["norm1_context.linear"],
    "img_attn.qkv": ["attn.to_q", "attn.to_k", "attn.to_v"],
    "txt_attn.qkv": ["attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"],
    "img_attn.proj": ["attn.to_out.0"],
    "txt_attn.proj": ["attn.to_add_out"],
    "img_mlp.0": ["ff.net.0.proj"],
    "img_mlp.2": ["ff.net.2"],
    "txt_mlp.0": ["ff_context.net.0.proj"],
    "txt_mlp.2": ["ff_context.net.2"],
}
_DOUBLE_NORMS = {
    "img_attn.norm.query_norm": "attn.norm_q",
    "img_attn.norm.key_norm": "attn.norm_k",
    "txt_attn.norm.query_norm": "attn.norm_added_q",
    "txt_attn.norm.key_norm": "attn.norm_added_k",
}
_SINGLE = {
    "linear1": ["attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"],
    "linear2": ["proj_out"],
    "modulation.lin": ["norm.linear"],
}
_SINGLE_NORMS = {"norm.query_norm": "attn.norm_q", "norm.key_norm": "attn.norm_k"}


def to_bfl(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """A diffusers FluxTransformer2DModel state dict in BFL's names."""
    out: dict[str, torch.Tensor] = {}

    def fuse(bfl: str, members: list[str]) -> None:
        for param in ("weight", "bias"):
            if all(f"{member}.{param}" in state for member in members):
                out[f"{bfl}.{param}"] = torch.cat([state.pop(f"{member}.{param}") for member in members])

    for bfl, members in _TOP.items():
        fuse(bfl, members)
    shift_scale = "final_layer.adaLN_modulation.1"
    for param in ("weight", "bias"):
        scale, shift = out[f"{shift_scale}.{param}"].chunk(2)
        out[f"{shift_scale}.{param}"] = torch.cat([shift, scale])
    blocks = {name.split(".")[1] for name in state if name.startswith("transformer_blocks.")}
    for index in sorted(blocks):
        for bfl, members in _DOUBLE.items():
            fuse(f"double_blocks.{index}.{bfl}", [f"transformer_blocks.{index}.{m}" for m in members])
        for bfl, norm in _DOUBLE_NORMS.items():
            out[f"double_blocks.{index}.{bfl}.scale"] = state.pop(f"transformer_blocks.{index}.{norm}.weight")
    blocks = {name.split(".")[1] for name in state if name.startswith("single_transformer_blocks.")}
    for index in sorted(blocks):
        for bfl, members in _SINGLE.items():
            fuse(f"single_blocks.{index}.{bfl}", [f"single_transformer_blocks.{index}.{m}" for m in members])
        for bfl, norm in _SINGLE_NORMS.items():
            out[f"single_blocks.{index}.{bfl}.scale"] = state.pop(f"single_transformer_blocks.{index}.{norm}.weight")
    assert not state, f"left unconverted: {sorted(state)[:5]}"
    return {prefix + name: tensor.contiguous() for name, tensor in out.items()}


def vae_to_ae(state: dict[str, torch.Tensor], up_blocks: int) -> dict[str, torch.Tensor]:
    """A diffusers AutoencoderKL state dict in BFL's AE names (the LDM VAE's, without a prefix)."""
    out = {}
    for name, tensor in state.items():
        new = name.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
        for number in (0, 1):
            new = new.replace(f"mid_block.resnets.{number}.", f"mid.block_{number + 1}.")
        new = new.replace("down_blocks.", "down.").replace(".resnets.", ".block.")
        new = new.replace(".downsamplers.0.", ".downsample.").replace(".upsamplers.0.", ".upsample.")
        if "mid_block.attentions.0." in new:
            new = new.replace("mid_block.attentions.0.", "mid.attn_1.").replace("group_norm", "norm")
            new = new.replace("to_q", "q").replace("to_k", "k").replace("to_v", "v").replace("to_out.0", "proj_out")
            if tensor.ndim == 2:
                tensor = tensor[:, :, None, None]  # BFL's attention projections are 1x1 convolutions
        if "up_blocks." in new:
            index = int(new.split("up_blocks.")[1].split(".")[0])
            new = new.replace(f"up_blocks.{index}.", f"up.{up_blocks - 1 - index}.")  # LDM counts up from the bottom
        out[new] = tensor.contiguous()
    return out


# ---------------------------------------------------------------------------------------------
# The files.


@pytest.fixture(scope="module")
def tiny() -> Path:
    return ensure_tiny_flux()


@pytest.fixture(scope="module")
def transformers(tiny: Path) -> dict:
    """The tiny transformer as dev, and as schnell with two double blocks; every weight random (the
    norms' too, which start at one: a swapped pair of them must show)."""
    from diffusers import FluxTransformer2DModel

    config = dict(FluxTransformer2DModel.load_config(tiny / "transformer"))
    built = {}
    for name, changes in (("dev", {}), ("schnell", {"guidance_embeds": False, "num_layers": 2})):
        model = FluxTransformer2DModel.from_config({**config, **changes}).eval()
        torch.manual_seed(11)
        for param in model.parameters():
            param.data.normal_(1.0 if param.ndim == 1 else 0.0, 0.1)
        built[name] = model
    return built


@pytest.fixture(scope="module")
def files(tiny: Path, transformers: dict, tmp_path_factory) -> dict[str, Path]:
    """flux1-dev / flux1-schnell (two double blocks, under model.diffusion_model.), ae, clip_l, t5xxl
    (fp16-like and fp8), all from the tiny model."""
    folder = tmp_path_factory.mktemp("flux-files")
    save_file(to_bfl(dict(transformers["dev"].state_dict())), folder / "flux1-dev.safetensors")
    schnell = to_bfl(dict(transformers["schnell"].state_dict()), "model.diffusion_model.")
    save_file(schnell, folder / "flux1-schnell.safetensors")
    vae = load_file(tiny / "vae" / "diffusion_pytorch_model.safetensors")
    save_file(vae_to_ae(vae, up_blocks=4), folder / "ae.safetensors")
    clip = load_file(tiny / "text_encoder" / "model.safetensors")  # as clip_l.safetensors names them
    clip = {"text_model." + name.removeprefix("text_model."): tensor for name, tensor in clip.items()}
    save_file(clip, folder / "clip_l.safetensors")
    t5 = load_file(tiny / "text_encoder_2" / "model.safetensors")
    save_file({name: tensor.half() for name, tensor in t5.items()}, folder / "t5xxl_fp16.safetensors")
    fp8 = {name: tensor.to(torch.float8_e4m3fn if _fp8_in_file(name) else torch.float16) for name, tensor in t5.items()}
    save_file(fp8, folder / "t5xxl_fp8_e4m3fn.safetensors")
    return {path.stem: path for path in folder.iterdir()}


def _fp8_in_file(name: str) -> bool:
    """As comfyanonymous' t5xxl_fp8_e4m3fn holds them: the blocks' Linear weights in fp8, the embeddings,
    norms and relative attention bias wider."""
    return ".block." in name and "layer_norm" not in name and "relative_attention_bias" not in name


@pytest.fixture(autouse=True)
def empty_hub_cache(tmp_path, monkeypatch):
    """No FLUX.1 tokenizers in a Hugging Face cache: only model.tokenizer provides them."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(preflight, "this_machine", lambda: preflight.Machine(None, no_gpu="this test has no GPU"))


def flux_config(project: Path, files: dict[str, Path], tiny: Path, **model) -> Path:
    settings = {
        "path": str(files["flux1-dev"]),
        "family": "flux",
        "ae_path": str(files["ae"]),
        "clip_l_path": str(files["clip_l"]),
        "t5xxl_path": str(files["t5xxl_fp16"]),
        "tokenizer": str(tiny),
        **model,
    }
    data = small_config(model=settings)
    data["dataset"]["resolution"] = 64
    return write_config(project, data)


# ---------------------------------------------------------------------------------------------
# Loading.


def _transformer_output(model, seed: int = 3) -> torch.Tensor:
    """The transformer's output for fixed inputs, computed with its weights copied into fresh memory: a
    tensor read from a file may sit at an address of another alignment, where CPU kernels round
    differently in the last bit (the same weights loaded by diffusers' from_pretrained do too)."""
    for param in model.parameters():
        param.data = param.data.clone()
    generator = torch.Generator().manual_seed(seed)
    config = model.config
    hidden = torch.randn(1, 16, config.in_channels, generator=generator)
    text = torch.randn(1, 5, config.joint_attention_dim, generator=generator)
    pooled = torch.randn(1, config.pooled_projection_dim, generator=generator)
    img_ids = torch.stack(torch.meshgrid(torch.zeros(1), torch.arange(4.0), torch.arange(4.0), indexing="ij"), -1)
    guidance = torch.tensor([3.5]) if config.guidance_embeds else None
    with torch.no_grad():
        return model(
            hidden_states=hidden,
            encoder_hidden_states=text,
            pooled_projections=pooled,
            timestep=torch.tensor([0.4]),
            img_ids=img_ids.reshape(-1, 3),
            txt_ids=torch.zeros(5, 3),
            guidance=guidance,
        ).sample


def test_the_four_files_load_as_the_model_they_were_made_from(project, files, tiny, transformers):
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel

    model = load_flux_files(load_config(flux_config(project, files, tiny)))
    original = transformers["dev"]
    assert torch.equal(_transformer_output(model.transformer), _transformer_output(original))
    expected = original.state_dict()
    assert model.transformer.state_dict().keys() == expected.keys()
    assert all(torch.equal(model.transformer.state_dict()[name], expected[name]) for name in expected)
    assert model.transformer.config.guidance_embeds and model.unet is None
    for loaded, reference in (
        (model.vae, AutoencoderKL.from_pretrained(tiny / "vae")),
        (model.text_encoder, CLIPTextModel.from_pretrained(tiny / "text_encoder")),
    ):
        expected = reference.state_dict()
        assert loaded.state_dict().keys() == expected.keys()
        assert all(torch.equal(loaded.state_dict()[name], expected[name]) for name in expected)
    t5 = T5EncoderModel.from_pretrained(tiny / "text_encoder_2")
    ids = model.tokenizer_2(["a photo of a cat"], return_tensors="pt").input_ids
    with torch.no_grad():  # the fp16 file: T5's outputs within fp16's rounding of the weights
        got, want = model.text_encoder_2(ids).last_hidden_state, t5(ids).last_hidden_state
    torch.testing.assert_close(got, want, atol=2e-2, rtol=1e-2)
    assert model.tokenizer("a cat").input_ids == CLIPTokenizer.from_pretrained(tiny / "tokenizer")("a cat").input_ids
    assert model.vae.config.scaling_factor == 0.3611 and model.vae.config.shift_factor == 0.1159
    assert model.noise_scheduler.config.use_dynamic_shifting  # dev's
    assert model.name == "flux1-dev.safetensors"


def test_a_schnell_file_takes_its_block_count_and_guidance_from_its_header(project, files, tiny, transformers):
    cfg = load_config(flux_config(project, files, tiny, path=str(files["flux1-schnell"]), flux_variant="schnell"))
    model = load_flux_files(cfg, keep_fp8=False)
    assert model.transformer.config.num_layers == 2 and not model.transformer.config.guidance_embeds
    assert torch.equal(_transformer_output(model.transformer), _transformer_output(transformers["schnell"]))
    assert not model.noise_scheduler.config.use_dynamic_shifting  # schnell's
    assert flux_files.flux_variant_of(cfg) == "schnell"


def test_an_fp8_t5_file_loads_upcast_to_the_training_dtype(project, files, tiny):
    cfg = load_config(flux_config(project, files, tiny, t5xxl_path=str(files["t5xxl_fp8_e4m3fn"])))
    t5 = load_flux_files(cfg).text_encoder_2
    query = t5.encoder.block[0].layer[0].SelfAttention.q.weight
    stored = load_file(files["t5xxl_fp8_e4m3fn"])["encoder.block.0.layer.0.SelfAttention.q.weight"]
    assert query.dtype == torch.float32 and torch.equal(query, stored.float())
    kept = load_flux_files(cfg, keep_fp8=True).text_encoder_2.encoder.block[0].layer[0].SelfAttention.q.weight
    assert kept.dtype == torch.float8_e4m3fn


def test_the_conversion_is_diffusers_own_on_flux1_shapes():
    """diffusers' single-file converter splits at FLUX.1's width (3072) only; at that width the two agree
    exactly. Each tensor is one column of numbers that say which tensor and row it is, so any misplaced
    row or swapped half shows, at no memory cost."""
    from diffusers import FluxTransformer2DModel
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

    with torch.device("meta"):
        model = FluxTransformer2DModel(num_layers=2, num_single_layers=2, guidance_embeds=True)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    rows = {name: shape[0] for name, shape in to_bfl_shapes(shapes).items()}
    state = {
        name: torch.arange(count, dtype=torch.float64) + 100_000 * number
        for number, (name, count) in enumerate(sorted(rows.items()))
    }
    ours = bfl_to_diffusers(state.items(), shapes)
    theirs = convert_flux_transformer_checkpoint_to_diffusers(dict(state))
    assert ours.keys() == theirs.keys() == shapes.keys()
    assert all(torch.equal(ours[name], theirs[name]) for name in ours)


def to_bfl_shapes(shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """The BFL tensors' shapes for diffusers parameters of these shapes (rows only matter)."""
    fake = {name: torch.empty(shape[0], 0) for name, shape in shapes.items()}
    return {name: tuple(tensor.shape) for name, tensor in to_bfl(fake).items()}


# ---------------------------------------------------------------------------------------------
# The check: one line per mistake, before any weight loads; the engine refuses the same.


def check(config: Path, capsys) -> tuple[int, list[str]]:
    code = cli.main(["check", str(config)])
    out = capsys.readouterr().out
    assert "Traceback" not in out
    return code, [line.strip() for line in out.splitlines() if line.strip().startswith(("error", "warning"))]


def test_the_four_files_are_ready(project, files, tiny, capsys):
    assert check(flux_config(project, files, tiny), capsys) == (0, [])


@pytest.mark.parametrize(
    "model,where,says,fix",
    [
        (
            {"ae_path": ""},
            "model.ae_path",
            "flux1-dev.safetensors is a FLUX.1 transformer file, which needs the FLUX.1 autoencoder (AE) beside it",
            "set ae_path to ae.safetensors (from black-forest-labs/FLUX.1-dev or FLUX.1-schnell)",
        ),
        (
            {"clip_l_path": ""},
            "model.clip_l_path",
            "which needs a CLIP text encoder beside it",
            "set clip_l_path to clip_l.safetensors (from comfyanonymous/flux_text_encoders)",
        ),
        (
            {"t5xxl_path": ""},
            "model.t5xxl_path",
            "which needs a T5 text encoder beside it",
            "set t5xxl_path to t5xxl_fp16.safetensors or t5xxl_fp8_e4m3fn.safetensors",
        ),
        (
            {"ae_path": "models/ae.safetensors"},
            "model.ae_path",
            "file not found: ",
            "check the file name; relative paths start at the config's folder",
        ),
        (
            {"ae_path": "@clip_l"},
            "model.ae_path",
            "ae_path points at clip_l.safetensors, which is a CLIP text encoder, not the FLUX.1 autoencoder (AE)",
            "set it to ae.safetensors (from black-forest-labs/FLUX.1-dev or FLUX.1-schnell); that file belongs in "
            "model.clip_l_path",
        ),
        (
            {"t5xxl_path": "@clip_l"},
            "model.t5xxl_path",
            "t5xxl_path points at clip_l.safetensors, which is a CLIP text encoder, not a T5 text encoder",
            "set it to t5xxl_fp16.safetensors or t5xxl_fp8_e4m3fn.safetensors",
        ),
        (
            {"path": "@ae"},
            "model.path",
            "ae.safetensors is the FLUX.1 autoencoder (AE), not a FLUX.1 transformer",
            "set model.ae_path to it, and model.path to the transformer (flux1-dev.safetensors)",
        ),
        (
            {"path": "@flux1-schnell", "flux_variant": "dev"},
            "model.flux_variant",
            "flux1-schnell.safetensors is FLUX.1 schnell (it has no guidance_in layer), "
            'but model.flux_variant is "dev"',
            'set model.flux_variant = "schnell" (or "auto"), or point model.path at FLUX.1 dev weights',
        ),
        (
            {"flux_variant": "schnell"},
            "model.flux_variant",
            'flux1-dev.safetensors is FLUX.1 dev (it has a guidance_in layer), but model.flux_variant is "schnell"',
            'set model.flux_variant = "dev" (or "auto"), or point model.path at FLUX.1 schnell weights',
        ),
        (
            {"family": "sdxl"},
            "model.family",
            'flux1-dev.safetensors is a FLUX.1 checkpoint, but model.family is "sdxl"',
            'set model.family = "flux"',
        ),
        (
            {"tokenizer": ""},
            "model.tokenizer",
            "a FLUX.1 transformer file needs the CLIP-L and T5 tokenizers beside it, and none are on this machine",
            "set model.tokenizer to a folder with tokenizer/ and tokenizer_2/ (a local FLUX.1 diffusers model), or "
            "fetch FLUX.1's tokenizers once with network: hf download black-forest-labs/FLUX.1-schnell "
            "--include 'tokenizer/*' 'tokenizer_2/*'",
        ),
    ],
    ids=[
        "no-ae",
        "no-clip",
        "no-t5",
        "ae-missing",
        "ae-is-clip",
        "t5-is-clip",
        "path-is-ae",
        "schnell-as-dev",
        "dev-as-schnell",
        "flux-as-sdxl",
        "no-tokenizers",
    ],
)
def test_each_file_mistake_is_one_error_line(project, files, tiny, capsys, model, where, says, fix):
    model = {key: str(files[value[1:]]) if value.startswith("@") else value for key, value in model.items()}
    config = flux_config(project, files, tiny, **model)
    code, lines = check(config, capsys)
    assert code == 1
    assert len(lines) == 1 and lines[0].startswith(f"error    {where}: "), lines
    assert says in lines[0] and f"(fix: {fix}" in lines[0], lines[0]
    if where != "model.family":  # the engine refuses the same, before it reads a weight
        with pytest.raises(UserError) as refused:
            load_flux_files(load_config(config))
        assert refused.value.where == where and says in refused.value.message


def test_files_narrower_than_flux1_need_their_own_configs(project, files, tiny, capsys):
    """With tokenizers alone the shipped FLUX.1 configs apply, whose RoPE axes (16, 56, 56) fit 128-wide heads:
    the tiny files' 16-wide heads are named at once, as the engine refuses them."""
    tokenizers = project / "tokenizers"
    for name in ("tokenizer", "tokenizer_2"):
        shutil.copytree(tiny / name, tokenizers / name)
    config = flux_config(project, files, tiny, tokenizer=str(tokenizers))
    code, lines = check(config, capsys)
    assert code == 1 and len(lines) == 1, lines
    assert lines[0].startswith(
        "error    model.tokenizer: flux1-dev.safetensors has attention heads 16 wide, but the RoPE axes of the "
        "FLUX.1 config it loads with ([16, 56, 56]) add up to 128 (fix: set model.tokenizer to the model's own "
        "diffusers folder"
    ), lines[0]
    with pytest.raises(UserError, match="add up to 128"):
        load_flux_files(load_config(config))


def test_the_cli_prints_one_line_and_exits_non_zero(project, files, tiny):
    config = flux_config(project, files, tiny, t5xxl_path="")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    command = [sys.executable, "-m", "loratui.cli", "check", str(config)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr
    errors = [line for line in done.stdout.splitlines() if line.strip().startswith("error")]
    assert len(errors) == 1 and "model.t5xxl_path: flux1-dev.safetensors is a FLUX.1 transformer file" in errors[0]


@pytest.mark.parametrize(
    "model,code,says",
    [
        ({}, 0, ""),
        (
            {"flux_variant": "schnell"},
            1,
            "error    model.flux_variant: tiny-flux-v1 is FLUX.1 dev (its transformer has "
            'guidance_embeds), but model.flux_variant is "schnell"',
        ),
        ({"family": "sdxl"}, 1, "is a FLUX.1 model, but model.family is 'sdxl' (fix: set model.family = \"flux\")"),
    ],
    ids=["ready", "dev-as-schnell", "flux-as-sdxl"],
)
def test_a_diffusers_flux_folder_is_checked_as_one(project, files, tiny, capsys, model, code, says):
    got, lines = check(
        flux_config(
            project, files, tiny, path=str(tiny), ae_path="", clip_l_path="", t5xxl_path="", tokenizer="", **model
        ),
        capsys,
    )
    assert got == code and len(lines) == (1 if says else 0), lines
    assert not says or says in lines[0]


def test_a_flux_folder_without_its_transformer_weights_is_one_line(project, files, tiny, capsys):
    folder = project / "FLUX.1-dev"
    shutil.copytree(tiny, folder)
    (folder / "transformer" / "diffusion_pytorch_model.safetensors").unlink()
    code, lines = check(flux_config(project, files, tiny, path=str(folder), tokenizer=""), capsys)
    assert code == 1 and len(lines) == 1, lines
    assert "error    model.path: " in lines[0]
    assert "is not a FLUX.1 folder the engine can load: no safetensors weights in transformer/" in lines[0]


def test_the_tokenizers_are_found_in_the_hugging_face_cache(project, files, tiny, capsys, tmp_path):
    """Where `hf download black-forest-labs/FLUX.1-schnell ...` puts them (here with the tiny model's configs
    beside them, which the tiny files need)."""
    storage = tmp_path / "hf-cache" / "models--black-forest-labs--FLUX.1-schnell"
    shutil.copytree(tiny, storage / "snapshots" / "0123abc")
    (storage / "refs").mkdir()
    (storage / "refs" / "main").write_text("0123abc")
    assert check(flux_config(project, files, tiny, tokenizer=""), capsys) == (0, [])


def test_an_fp8_t5_without_fp8_base_is_a_warning_and_with_it_ready(project, files, tiny, capsys):
    fp8 = str(files["t5xxl_fp8_e4m3fn"])
    code, lines = check(flux_config(project, files, tiny, t5xxl_path=fp8), capsys)
    assert code == 0 and len(lines) == 1, lines
    assert lines[0].startswith(
        "warning  model.t5xxl_path: t5xxl_fp8_e4m3fn.safetensors holds fp8 weights and "
        "fp8_base is off: they load upcast to fp32"
    ), lines[0]
    assert "(fix: set fp8_base = true to keep T5 in fp8, or use t5xxl_fp16.safetensors)" in lines[0]
    assert check(flux_config(project, files, tiny, t5xxl_path=fp8, fp8_base=True), capsys) == (0, [])


def test_the_classification_of_each_file(files, tiny):
    kinds = {name: flux_files.flux_file(path) for name, path in files.items()}
    dev = kinds["flux1-dev"]
    assert (dev.kind, dev.variant, dev.prefix) == ("transformer", "dev", "")
    schnell = kinds["flux1-schnell"]
    assert (schnell.kind, schnell.variant, schnell.prefix) == ("transformer", "schnell", "model.diffusion_model.")
    assert kinds["ae"].kind == "ae" and kinds["ae"].widths["latent"] == 16 == kinds["flux1-dev"].widths["latent"]
    assert kinds["clip_l"].kind == "clip_l" and kinds["clip_l"].widths["width"] == kinds["flux1-dev"].widths["pooled"]
    assert (kinds["t5xxl_fp16"].kind, kinds["t5xxl_fp16"].dtype) == ("t5xxl", "F16")
    assert kinds["t5xxl_fp8_e4m3fn"].dtype == "F8_E4M3"
    assert model_detect.checkpoint_kind(files["flux1-dev"]).variant == "dev"
    assert model_detect.checkpoint_kind(files["flux1-schnell"]).variant == "schnell"
    diffusers_file = flux_files.flux_file(tiny / "transformer" / "diffusion_pytorch_model.safetensors")
    assert (diffusers_file.kind, diffusers_file.variant) == ("diffusers_transformer", "dev")


def test_flux_variant_of_a_folder_a_file_and_the_built_in(project, files, tiny):
    def variant(path: str) -> str | None:
        return flux_files.flux_variant_of(load_config(flux_config(project, files, tiny, path=path)))

    assert variant(str(tiny)) == "dev"
    assert variant(str(files["flux1-dev"])) == "dev"
    assert variant(str(files["flux1-schnell"])) == "schnell"
    assert variant("loratui:tiny-flux") == "dev"


@pytest.mark.slow
def test_fp8_files_with_fp8_base_keep_their_float8_weights_and_train(project, files, tiny, tmp_path, monkeypatch):
    """flux1-dev-fp8 and t5xxl_fp8_e4m3fn with fp8_base: the file's float8 tensors are the weights the run
    computes with, never expanded to bf16 on the way (what keeps a 12 GB transformer 12 GB in RAM)."""
    from engine.families.flux import Flux
    from engine.low_precision import FP8_DTYPE, Fp8Linear, cast_keeping_fp8, store_in_fp8
    from loratui.config import save_config
    from tests.conftest import SAMPLE, train_in_process

    monkeypatch.setattr(preflight, "precision_problems", lambda precision, machine: [])  # bf16 on the CPU
    dev = load_file(files["flux1-dev"])
    stored = {k: v.to(FP8_DTYPE) if v.ndim == 2 and "_blocks." in k else v.half() for k, v in dev.items()}
    fp8_file = tmp_path / "flux1-dev-fp8.safetensors"
    save_file(stored, fp8_file)
    shutil.copytree(SAMPLE / "img", project / "img", dirs_exist_ok=True)
    config = flux_config(project, files, tiny, path=str(fp8_file), t5xxl_path=str(files["t5xxl_fp8_e4m3fn"]))
    cfg = load_config(config)
    cfg.model.fp8_base, cfg.training.mixed_precision, cfg.training.max_train_steps = True, "bf16", 2
    save_config(cfg, config)

    # Loading, the cast to the training dtype and the fp8 storage keep the very tensors of the file.
    model = Flux().load(cfg)
    weight = model.transformer.transformer_blocks[0].attn.to_q.weight
    assert weight.dtype == FP8_DTYPE
    address = weight.data_ptr()
    cast_keeping_fp8(model.transformer, torch.bfloat16)
    store_in_fp8(model.transformer, torch.bfloat16)
    layer = model.transformer.transformer_blocks[0].attn.to_q
    assert isinstance(layer, Fp8Linear) and layer.weight.data_ptr() == address
    assert model.transformer.transformer_blocks[0].attn.norm_q.weight.dtype == torch.bfloat16
    assert model.text_encoder_2.encoder.block[0].layer[0].SelfAttention.q.weight.dtype == FP8_DTYPE

    recorder, trainer = train_in_process(config)
    assert len(recorder.of("step")) == 2
    base = trainer.accelerator.unwrap_model(trainer.model.transformer).transformer_blocks[0].attn.to_q.base_layer
    # to_q is the first third of BFL's fused qkv rows: the file's float8 values, bit for bit
    qkv = stored["double_blocks.0.img_attn.qkv.weight"]
    assert base.weight.dtype == FP8_DTYPE
    assert torch.equal(base.weight.view(torch.uint8), qkv[: qkv.shape[0] // 3].view(torch.uint8))
