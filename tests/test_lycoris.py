"""LyCORIS network types (network.type locon, loha, lokr, ia3; DoRA), kohya's dropouts and max norm.

Every file is read back by LyCORIS's own loader (``lycoris.kohya.create_network_from_weights``) onto a
freshly loaded base model, which must then compute what the trained model computed: the file holds the
trained network, under the keys LyCORIS, ComfyUI and A1111/Forge read.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from loratui.check import check_run
from loratui.config import NetworkSettings, config_from_dict
from tests.conftest import small_config, train_in_process, write_config

SD = "loratui:tiny-sd"
SDXL = "loratui:tiny-sdxl"

# What each trained type's modules hold in the file.
TYPE_KEYS = {
    "locon": {"lora_down.weight", "lora_up.weight", "alpha"},
    "loha": {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "alpha"},
    "ia3": {"weight", "on_input"},
}


def lycoris_config(network: dict, **sections) -> dict:
    """Rank 4 at 64 px, 3 steps of one image, the file in float32 (compared exactly), a state saved with it."""
    data = small_config(
        network={"rank": 4, "alpha": 2.0, **network},
        dataset={"resolution": 64, "max_bucket_reso": 128},
        training={"batch_size": 1, "max_train_steps": 3, "epochs": 1},
        optimizer={"unet_lr": 1e-2, "text_encoder_lr": 1e-2},
        output={"save_precision": "float", "save_state": True, "log_with": "none", "save_every_n_epochs": 0},
    )
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return data


def load_model(path: str = SD, family: str = "sd1"):
    from engine.model_loading import load_base_model

    return load_base_model(path, Path(path), family, False, None)


def fixed_inputs(model, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    config = model.unet.config
    latents = torch.randn(1, config.in_channels, 8, 8, generator=generator)
    text = torch.randn(1, 77, config.cross_attention_dim, generator=generator)
    ids = torch.randint(0, model.text_encoder.config.vocab_size, (1, 77), generator=generator)
    return latents, text, ids


@torch.no_grad()
def outputs(model) -> tuple[torch.Tensor, torch.Tensor]:
    """The UNet's prediction and text encoder 1's states for fixed inputs, in eval mode."""
    model.unet.eval()
    model.text_encoder.eval()
    latents, text, ids = fixed_inputs(model)
    unet = model.unet(latents, torch.tensor([500]), encoder_hidden_states=text).sample
    return unet, model.text_encoder(ids)[0]


def named_view(modules: dict[str, nn.Module]) -> nn.Module:
    """A module whose children are ``modules`` under these names (dots as underscores), shared, not copied:
    LyCORIS's loader, given it, finds each module under the name a kohya file gives it."""
    view = nn.Module()
    for name, module in modules.items():
        if not list(module.children()):  # the layers alone: a block would list its layers again under its name
            view.add_module(name.replace(".", "_"), module)
    return view


def clip_view(encoder: nn.Module) -> nn.Module:
    """A CLIP text model under kohya's names (``text_model.encoder...``, which transformers 5 dropped)."""
    from engine.kohya_format import kohya_key

    return named_view(
        {kohya_key("lora_te", path).removeprefix("lora_te_"): m for path, m in encoder.named_modules() if path}
    )


def apply_file_with_lycoris(path: Path, unet: nn.Module, text_encoders) -> nn.Module:
    """LyCORIS's own loader: the network the file describes, applied to these modules."""
    from lycoris.kohya import create_network_from_weights
    from lycoris.modules.ia3 import IA3Module

    # LyCORIS 4.1.3's loader hands an iA3 layer its weight and on_input, but the layer's maker takes the
    # weight alone (every iA3 file fails to load there): give it the weight, on_input being 0 (outputs).
    make = IA3Module.make_module_from_state_dict.__func__

    def make_ia3(cls, lora_name, original, weight, on_input=None):
        assert on_input is None or int(on_input) == 0
        return make(cls, lora_name, original, weight)

    IA3Module.make_module_from_state_dict = classmethod(make_ia3)
    try:
        network, weights = create_network_from_weights(1.0, str(path), None, text_encoders, unet, for_inference=True)
    finally:
        IA3Module.make_module_from_state_dict = classmethod(make)
    modules = {key.split(".", 1)[0] for key in weights}
    assert len(network.unet_loras) + len(network.text_encoder_loras) == len(modules)  # every module found
    network.apply_to(text_encoders, unet, apply_text_encoder=True, apply_unet=True)
    return network


def file_modules(tensors: dict) -> dict[str, set[str]]:
    modules: dict[str, set[str]] = {}
    for key in tensors:
        module, ending = key.split(".", 1)
        modules.setdefault(module, set()).add(ending)
    return modules


def metadata_of(path: Path) -> dict[str, str]:
    with safe_open(str(path), "pt") as handle:
        return handle.metadata()


# ----------------------------------------------------------------------------------- trained runs
TRAINED = {
    # LoHa with a Tucker core on its convolutions, the convolutions at their own rank, and a max norm
    "loha": {"type": "loha", "use_cp": True, "conv_rank": 2, "conv_alpha": 1.0, "scale_weight_norms": 0.02},
    # LoKr with a factor that divides none of the tiny model's dims (LyCORIS picks the nearest), DoRA
    "lokr": {"type": "lokr", "lokr_factor": 3, "dora": True, "rank_dropout": 0.2, "module_dropout": 0.2},
}


SAMPLES: dict[str, dict[int, Path]] = {}  # each trained run's sample images by step (its fixture fills it)


@pytest.fixture(scope="module", params=sorted(TRAINED))
def trained(request, tmp_path_factory):
    """A run of 3 steps over two of the sample images, stopped after its second: the file and the state
    that a stop saves."""
    from tests.conftest import SAMPLE

    project = tmp_path_factory.mktemp(request.param)
    concept = project / "img" / "10_ohwx shape"
    concept.mkdir(parents=True)
    for source in sorted((SAMPLE / "img" / "10_ohwx shape").iterdir()):
        if source.stem in ("shape_01", "shape_02"):
            (concept / source.name).write_bytes(source.read_bytes())
    samples = {"prompts": ["ohwx shape --w 64 --h 64 --s 2"], "at_start": True, "every_n_steps": 1}
    config = write_config(project, lycoris_config(TRAINED[request.param], sample=samples))

    def stop_after_two(event, stop):
        if event["type"] == "step" and event["step"] == 2:
            stop.request("request")

    logging.getLogger("engine.train").setLevel(logging.INFO)
    with _captured_log() as lines:
        recorder, trainer = train_in_process(config, on_event=stop_after_two)
    stopped = recorder.of("stopped")[0]
    SAMPLES[request.param] = {event["step"]: Path(event["path"]) for event in recorder.of("sample")}
    return request.param, project, Path(stopped["path"]), Path(stopped["state"]), trainer, lines


class _captured_log:
    """The engine's log lines while training (the max-norm step reports there)."""

    def __enter__(self) -> list[str]:
        self.lines: list[str] = []
        lines = self.lines

        class Keep(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                lines.append(record.getMessage())

        self.handler = Keep()
        logging.getLogger("engine.train").addHandler(self.handler)
        return self.lines

    def __exit__(self, *exc) -> None:
        logging.getLogger("engine.train").removeHandler(self.handler)


def test_lycoris_loads_the_trained_file_and_computes_what_was_trained(trained):
    kind, _, path, _, trainer, _ = trained
    trained_out = outputs(trainer.model)

    fresh = load_model()
    base_out = outputs(fresh)
    apply_file_with_lycoris(path, fresh.unet, clip_view(fresh.text_encoder))
    loaded_out = outputs(fresh)
    for trained_tensor, loaded, base in zip(trained_out, loaded_out, base_out, strict=True):
        assert not torch.allclose(trained_tensor, base, atol=1e-6)  # the network changed the model
        torch.testing.assert_close(loaded, trained_tensor, atol=1e-5, rtol=1e-4)


def test_samples_during_training_render_with_the_layers(trained):
    """The samples are rendered through the model the layers are in: the base model's at the start, the
    trained network's after a step."""
    from PIL import Image

    samples = SAMPLES[trained[0]]
    assert 0 in samples and 1 in samples
    start, after = (torch.tensor(list(Image.open(samples[step]).getdata())) for step in (0, 1))
    assert not torch.equal(start, after)


def test_the_file_has_the_type_keys_and_metadata_kohya_writes(trained):
    kind, _, path, _, _, _ = trained
    tensors = load_file(path)
    modules = file_modules(tensors)
    assert {m.split("_", 2)[1] for m in modules} == {"unet", "te"}  # lora_unet_..., lora_te_...
    if kind == "loha":
        # every module's LoHa pair, the 3x3 convolutions with their Tucker cores
        assert all(TYPE_KEYS["loha"] <= endings for endings in modules.values())
        conv = "lora_unet_down_blocks_0_resnets_0_conv1"
        assert modules[conv] == TYPE_KEYS["loha"] | {"hada_t1", "hada_t2"}
        assert tensors[f"{conv}.hada_t1"].shape == (2, 2, 3, 3)  # at the conv rank
        assert tensors[f"{conv}.alpha"].item() == 1.0
    else:
        assert all({"lokr_w1", "dora_scale", "alpha"} <= endings for endings in modules.values())
        assert all(e & {"lokr_w2", "lokr_w2_a"} for e in modules.values())
    assert tensors["lora_unet_down_blocks_0_attentions_0_proj_in.alpha"].item() == 2.0
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj" in modules  # the keys every loader reads

    meta = metadata_of(path)
    assert meta["ss_network_module"] == "lycoris.kohya"
    args = json.loads(meta["ss_network_args"])
    assert args["algo"] == kind and args["preset"] == "full"
    if kind == "loha":
        assert args == {
            "preset": "full",
            "conv_dim": "2",
            "conv_alpha": "1",
            "use_tucker": "True",
            "rank_dropout": "0",
            "module_dropout": "0",
            "dora_wd": "False",
            "algo": "loha",
        }
    else:
        assert args["factor"] == "3" and args["dora_wd"] == "True" and args["rank_dropout"] == "0.2"
        assert "conv_dim" not in args  # LyCORIS's own default: the convolutions at the network rank
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "2"
    assert meta["ss_network_dropout"] == "None"


def test_the_state_loads_back_into_a_fresh_network(trained):
    """What a resume does with the state's weights: into the layers LyCORIS makes for a fresh model, which
    then holds exactly the saved tensors and computes what the trained model computed."""
    from engine.families.base import Part
    from engine.families.sd import TEXT_ENCODER, UNET
    from engine.lora import lycoris_targets
    from engine.lycoris_network import attach_lycoris
    from engine.saving import load_state_weights, state_weights
    from engine.state import read_lora_weights

    kind, _, _, state, trainer, _ = trained
    fresh = load_model()
    net = NetworkSettings(**{"rank": 4, "alpha": 2.0, **TRAINED[kind]})
    parts = []
    for spec, module in ((UNET, fresh.unet), (TEXT_ENCODER, fresh.text_encoder)):
        targets, layers = lycoris_targets(module, spec.denoiser, net)
        attach_lycoris(module, layers)
        parts.append(Part(spec, module, 1.0, True, targets, layers))
    saved = read_lora_weights(state)
    load_state_weights(parts, lambda m: m, saved)
    loaded = state_weights(parts, lambda m: m)
    assert loaded.keys() == saved.keys()
    for key, tensor in saved.items():
        torch.testing.assert_close(loaded[key].float(), tensor, atol=0, rtol=0)
    for got, want in zip(outputs(fresh), outputs(trainer.model), strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_a_resumed_run_continues_from_the_stop(trained):
    kind, project, _, state, _, _ = trained
    if kind != "loha":
        pytest.skip("one type is enough for a whole resumed run")
    data = lycoris_config(TRAINED[kind], output={"name": "resumed"})
    recorder, _ = train_in_process(write_config(project, data, "resumed.toml"), resume=str(state))
    assert recorder.of("run_started")[0]["start_step"] == 2
    assert [e["step"] for e in recorder.of("step")] == [3]
    assert recorder.of("finished")


def test_a_state_of_another_type_is_refused(trained):
    kind, project, _, state, _, _ = trained
    if kind != "lokr":
        pytest.skip("one pair of types is enough")
    cfg = config_from_dict(lycoris_config({"type": "loha"}), project)
    cfg.training.resume_from = str(state)
    problems = [p for p in check_run(cfg, overwrite=True).problems if p.where == "training.resume_from"]
    assert problems and "type lokr" in problems[0].message and "type loha" in problems[0].message


def test_max_norm_bounds_every_layer_and_reports_the_layers_scaled(trained):
    kind, _, _, _, trainer, lines = trained
    if kind != "loha":
        pytest.skip("the LoHa run has a max norm")
    reports = [line for line in lines if line.startswith("max norm:")]
    assert reports and "layers scaled to 0.02" in reports[-1]
    unet = trainer.accelerator.unwrap_model(trainer.model.unet)
    # the update's norm as LyCORIS's LoHa bounds it: its weight (alpha / rank in it) times its scalar
    with torch.no_grad():
        norms = [
            (layer.get_weight(layer.shape) * layer.scalar).norm().item() for _, layer in unet.lycoris_layers.by_path()
        ]
    assert max(norms) <= 0.02 * (1 + 1e-4)
    assert sum(norm > 0.02 * 0.99 for norm in norms) >= 1  # some layers were at the bound: it acted


# ------------------------------------------------------------------------------ without the loop
def _random_layers(model_part: nn.Module, denoiser: bool, **network) -> None:
    """LyCORIS layers on ``model_part`` with random values everywhere (a trained network's stand-in)."""
    from engine.lora import lycoris_targets
    from engine.lycoris_network import attach_lycoris

    net = NetworkSettings(**{"rank": 4, "alpha": 2.0, **network})
    _, layers = lycoris_targets(model_part, denoiser, net)
    attach_lycoris(model_part, layers)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, param in model_part.lycoris_layers.named_parameters():
            noise = torch.randn(param.shape, generator=generator) * 0.1
            param.copy_(param + noise if "dora_scale" in name else noise)


def _save_file(tmp_path: Path, family, parts: list) -> Path:
    """The LoRA file as a save writes it (engine.saving's tensors, kohya_format's writer)."""
    from engine.families.base import Part
    from engine.kohya_format import save_lora_file
    from engine.lora import LoraTarget
    from engine.saving import lora_file_tensors

    trained = [
        Part(spec, module, 1.0, True, [LoraTarget(path, 4, 2.0) for path in module.lycoris_layers.paths])
        for spec, module in parts
    ]
    tensors = lora_file_tensors(family, trained, lambda m: m, torch.float32)
    path = tmp_path / "random.safetensors"
    save_lora_file(path, tensors, {"ss_network_module": "lycoris.kohya"})
    return path


@pytest.mark.parametrize(
    "network",
    [
        {"type": "locon", "conv_rank": 4, "dora": True},
        {"type": "lokr", "lokr_full_matrix": True},
        {"type": "ia3"},
    ],
    ids=["locon-dora", "lokr-full-matrix", "ia3"],
)
def test_each_type_written_by_a_save_loads_back_in_lycoris(tmp_path, network):
    from engine.families import family_for
    from engine.families.sd import TEXT_ENCODER, UNET

    model = load_model()
    base_out = outputs(model)
    _random_layers(model.unet, True, **network)
    _random_layers(model.text_encoder, False, **network)
    expected = outputs(model)
    path = _save_file(tmp_path, family_for("sd1"), [(UNET, model.unet), (TEXT_ENCODER, model.text_encoder)])

    modules = file_modules(load_file(path))
    if network["type"] == "ia3":
        assert all(endings == TYPE_KEYS["ia3"] for endings in modules.values())
    elif network["type"] == "locon":
        assert all(endings == TYPE_KEYS["locon"] | {"dora_scale"} for endings in modules.values())
        assert "lora_unet_down_blocks_0_resnets_0_conv1" in modules  # the full preset's convolutions
    else:
        assert all(endings == {"lokr_w1", "lokr_w2", "alpha"} for endings in modules.values())

    fresh = load_model()
    apply_file_with_lycoris(path, fresh.unet, clip_view(fresh.text_encoder))
    for got, want, base in zip(outputs(fresh), expected, base_out, strict=True):
        assert not torch.allclose(want, base, atol=1e-6)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_an_sdxl_file_has_sgm_names_and_loads_back_in_lycoris(tmp_path):
    """SDXL's UNet modules are written under their sgm names, as sd-scripts (which trains an sgm UNet)
    names them: LyCORIS's loader, given the UNet under those names, reproduces the trained outputs."""
    from engine.families import family_for
    from engine.families.sd import UNET
    from engine.families.sdxl import TEXT_ENCODER_1
    from engine.sdxl_names import unet_module_to_sgm

    model = load_model(SDXL, "sdxl")
    network = {"type": "lokr", "lokr_factor": 4, "preset": "attn-mlp"}
    _random_layers(model.unet, True, **network)
    _random_layers(model.text_encoder, False, **network)

    def sdxl_outputs(m):
        config = m.unet.config
        generator = torch.Generator().manual_seed(0)
        latents = torch.randn(1, config.in_channels, 8, 8, generator=generator)
        text = torch.randn(1, 77, config.cross_attention_dim, generator=generator)
        pooled_width = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
        pooled = torch.randn(1, pooled_width, generator=generator)
        ids = torch.randint(0, m.text_encoder.config.vocab_size, (1, 77), generator=generator)
        added = {"text_embeds": pooled, "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]])}
        with torch.no_grad():
            m.unet.eval()
            m.text_encoder.eval()
            return m.unet(latents, torch.tensor([500]), text, added_cond_kwargs=added).sample, m.text_encoder(ids)[0]

    expected = sdxl_outputs(model)
    path = _save_file(tmp_path, family_for("sdxl"), [(UNET, model.unet), (TEXT_ENCODER_1, model.text_encoder)])
    modules = file_modules(load_file(path))
    assert "lora_unet_input_blocks_4_1_proj_in" in modules or "lora_unet_input_blocks_1_1_proj_in" in modules
    assert not any("down_blocks" in m for m in modules)

    fresh = load_model(SDXL, "sdxl")
    sgm = {}
    for name, module in fresh.unet.named_modules():
        try:
            sgm[unet_module_to_sgm(name)] = module
        except (KeyError, ValueError):
            continue
    apply_file_with_lycoris(path, named_view(sgm), [clip_view(fresh.text_encoder), clip_view(fresh.text_encoder_2)])
    for got, want in zip(sdxl_outputs(fresh), expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_dropouts_vary_the_output_in_training_and_not_in_eval():
    """network.dropout, rank_dropout and module_dropout reach LyCORIS's layers: two forward passes in
    training mode differ, in eval mode they are equal."""
    for network in ({"dropout": 0.5}, {"rank_dropout": 0.5}, {"module_dropout": 0.5}):
        model = load_model()
        _random_layers(model.unet, True, type="locon", preset="attn-mlp", **network)
        latents, text, _ = fixed_inputs(model)

        def run(m=model, latents=latents, text=text):
            with torch.no_grad():
                return m.unet(latents, torch.tensor([500]), encoder_hidden_states=text).sample

        torch.manual_seed(0)
        model.unet.train()
        assert not torch.equal(run(), run()), network
        model.unet.eval()
        assert torch.equal(run(), run()), network


def test_max_norm_of_a_plain_lora_is_kohyas():
    """type lora (peft): each module's alpha / rank x up @ down is scaled back to the bound, up and down
    alike (sd-scripts' rule), convolutions included; modules under the bound are left as they are."""
    from engine.lora import (
        UNET_ATTENTION_BLOCKS,
        UNET_CONV_BLOCKS,
        apply_max_norm,
        attach_lora,
        find_targets,
        update_of,
    )

    model = load_model()
    targets = find_targets(model.unet, UNET_ATTENTION_BLOCKS, 4, 2.0, UNET_CONV_BLOCKS, 2, 1.0)
    attach_lora(model.unet, targets)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.unet.named_parameters():
            if ".lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)

    def norms() -> dict[str, float]:
        found = {}
        for name, module in model.unet.named_modules():
            if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
                update = update_of(module.lora_B["default"].weight, module.lora_A["default"].weight)
                found[name] = float((update * module.scaling["default"]).norm())
        return found

    before = norms()
    bound = sorted(before.values())[len(before) // 2]  # half the modules above it
    scaled, after_norms = apply_max_norm(model.unet, bound, torch.device("cpu"))
    after = norms()
    assert scaled == sum(norm > bound for norm in before.values())
    assert max(after.values()) <= bound * (1 + 1e-5)
    assert all(after[n] == pytest.approx(before[n]) for n in before if before[n] <= bound)
    assert sorted(after_norms) == pytest.approx(sorted(after.values()))


# ------------------------------------------------------------------------------------ the check
def _problems(network: dict, project: Path, severity: str = "error", **sections) -> dict[str, str]:
    data = lycoris_config(network, **sections)
    cfg = config_from_dict(data, project)
    return {p.where: p.message for p in check_run(cfg, overwrite=True).problems if p.severity == severity}


@pytest.mark.parametrize(
    ("network", "where", "words"),
    [
        ({"type": "lora", "module_dropout": 0.1}, "network.module_dropout", 'type "lora"'),
        ({"type": "locon", "rank_dropout": 1.0}, "network.rank_dropout", "nothing would train"),
        ({"type": "locon", "dropout": 1.5}, "network.dropout", "0..1"),
        ({"type": "locon", "module_dropout": -0.1}, "network.module_dropout", "0..1"),
        ({"type": "loha", "preset": "unet-only"}, "network.preset", "text encoder"),
        ({"type": "ia3", "preset": "ia3"}, "network.preset", "no layer of a diffusers UNet"),
        ({"type": "locon", "preset": "attn-only"}, "network.preset", "no layer of a diffusers UNet"),
        ({"type": "glora"}, "network.type", "not supported yet"),
    ],
)
def test_the_check_refuses_what_cannot_train(project, network, where, words):
    problems = _problems(network, project)
    assert where in problems and words in problems[where], problems


@pytest.mark.parametrize(
    ("network", "where", "words"),
    [
        ({"type": "lokr", "dropout": 0.1}, "network.dropout", "no dropout"),
        ({"type": "ia3", "rank_dropout": 0.1}, "network.rank_dropout", "no rank_dropout"),
        ({"type": "ia3", "dora": True}, "network.dora", "ignores DoRA"),
        ({"type": "locon", "dora": True, "dropout": 0.1}, "network.dropout", "DoRA ignores"),
        ({"type": "ia3", "train_on_input": True}, "network.train_on_input", "ignores train_on_input"),
        ({"type": "ia3", "scale_weight_norms": 1.0}, "network.scale_weight_norms", "no update norm"),
    ],
)
def test_the_check_warns_of_what_lycoris_ignores_as_kohya_does(project, network, where, words):
    """Settings kohya_ss passes that LyCORIS's layers do not use: the run trains as kohya's would, and says so."""
    assert _problems(network, project) == {}
    warnings = _problems(network, project, severity="warning")
    assert where in warnings and words in warnings[where], warnings


@pytest.mark.parametrize(
    "network",
    [
        {"type": "lokr", "lokr_factor": 7},  # divides none of the tiny dims: LyCORIS picks the nearest factors
        {"type": "loha", "dora": True, "conv_rank": 4},  # DoRA on convolutions: LyCORIS decomposes them too
        {"type": "locon", "dropout": 0.1, "rank_dropout": 0.1, "module_dropout": 0.1},
        {"type": "ia3", "module_dropout": 0.1},
    ],
)
def test_the_check_accepts_what_lycoris_trains(project, network):
    assert _problems(network, project) == {}


def test_the_check_refuses_lycoris_for_flux_and_without_the_library(project, monkeypatch):
    problems = _problems({"type": "lokr"}, project, model={"path": "loratui:tiny-flux", "family": "flux"})
    assert "FLUX.1" in problems["network.type"]

    from loratui import preflight

    installed = preflight.installed
    monkeypatch.setattr(preflight, "installed", lambda name: name != "lycoris" and installed(name))
    problems = _problems({"type": "loha"}, project)
    assert "not installed" in problems["network.type"] and "lycoris-lora" in problems["network.type"]


def test_the_grid_refuses_a_lycoris_file_clearly(tmp_path):
    from safetensors.torch import save_file

    from loratui.errors import UserError
    from loratui.grid_spec import read_lora_file

    path = tmp_path / "lokr.safetensors"
    metadata = {"ss_network_module": "lycoris.kohya", "ss_network_args": json.dumps({"algo": "lokr"})}
    save_file({"lora_unet_x.lokr_w1": torch.ones(2, 2)}, str(path), metadata)
    with pytest.raises(UserError, match="LyCORIS file \\(lokr\\)"):
        read_lora_file(str(path))


@pytest.mark.slow
def test_sdxl_trains_a_lycoris_network_end_to_end(project):
    """The engine on SDXL: LyCORIS layers on the UNet and both text encoders, the file under sd-scripts'
    names (sgm for the UNet, lora_te1/lora_te2), each module found by LyCORIS's loader."""
    from engine.sdxl_names import unet_module_to_sgm

    data = lycoris_config(
        {"type": "lokr", "lokr_factor": 4, "preset": "attn-mlp"},
        model={"path": SDXL, "family": "sdxl"},
        dataset={"resolution": 64, "min_bucket_reso": 64, "max_bucket_reso": 256, "bucket_reso_steps": 32},
        training={"max_train_steps": 2},
        optimizer={"text_encoder_2_lr": 1e-2},
    )
    recorder, _ = train_in_process(write_config(project, data))
    path = Path(recorder.of("finished")[0]["path"])
    modules = file_modules(load_file(path))
    assert {m.split("_", 2)[1] for m in modules} == {"unet", "te1", "te2"}
    assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q" in modules or any(
        m.startswith("lora_unet_input_blocks_") for m in modules
    )
    assert metadata_of(path)["ss_network_module"] == "lycoris.kohya"

    fresh = load_model(SDXL, "sdxl")
    sgm = {}
    for name, module in fresh.unet.named_modules():
        try:
            sgm[unet_module_to_sgm(name)] = module
        except (KeyError, ValueError):
            continue
    apply_file_with_lycoris(path, named_view(sgm), [clip_view(fresh.text_encoder), clip_view(fresh.text_encoder_2)])


def test_the_check_and_the_review_name_the_network_type():
    """`loratui check` and the wizard's Review say which network trains, not just its rank."""
    from loratui.report import network_kind

    assert network_kind(NetworkSettings()) == ""  # kohya's LoRA: the lines stay as they were
    assert network_kind(NetworkSettings(type="lokr")) == "LyCORIS LoKr (full)"
    assert (
        network_kind(NetworkSettings(type="locon", preset="attn-mlp", dora=True)) == "LyCORIS LoCon (attn-mlp) + DoRA"
    )
