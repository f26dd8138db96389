"""The engine on the tiny model: real training, real files, checked the way a user would."""

from __future__ import annotations

import hashlib
import json
import math
import pickle
import struct

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from loratui.core.protocol import FINAL_EVENTS, decode, encode
from loratui.errors import UserError
from tests.conftest import small_config, train_in_process, write_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One full run (2 epochs x 20 steps, UNet + text encoder, rank 8, alpha 2) shared by the
    tests that only read its results."""
    import shutil

    from tests.conftest import SAMPLE

    folder = tmp_path_factory.mktemp("run")
    shutil.copytree(SAMPLE / "img", folder / "img")
    recorder, trainer = train_in_process(write_config(folder, small_config()))
    return folder, recorder, trainer


def test_every_event_is_valid_and_the_run_ends_once(finished_run):
    _, recorder, _ = finished_run
    for event in recorder.events:
        assert decode(encode(event)) == event
    kinds = [e["type"] for e in recorder.events]
    assert kinds.index("run_started") < kinds.index("step")
    assert kinds[-1] == "finished"
    assert sum(k in FINAL_EVENTS for k in kinds) == 1


def test_steps_losses_and_eval_loss(finished_run):
    _, recorder, _ = finished_run
    started = recorder.of("run_started")[0]
    steps = recorder.of("step")
    assert started["total_steps"] == 40 and started["total_epochs"] == 2 and started["steps_per_epoch"] == 20
    assert [s["step"] for s in steps] == list(range(1, 41))
    assert [s["epoch"] for s in steps] == [1] * 20 + [2] * 20
    assert all(math.isfinite(s["loss"]) and s["loss"] > 0 for s in steps)
    assert set(steps[0]["lr"]) == {"unet", "text_encoder"}
    evals = recorder.of("eval")
    assert [e["step"] for e in evals] == [0, 20, 40]
    # Same images, timesteps and noise each time: a drop means the LoRA learned the data.
    assert evals[-1]["loss"] < evals[0]["loss"] * 0.97, evals


def test_files_are_written_per_epoch_and_at_the_end(finished_run):
    folder, recorder, _ = finished_run
    model = folder / "model"
    assert (model / "test_lora-000001.safetensors").is_file()
    assert (model / "test_lora.safetensors").is_file()
    assert not (model / "test_lora-000002.safetensors").exists()  # the last epoch is the final file
    assert (model / "test_lora-000001-state" / "progress.json").is_file()
    assert (model / "test_lora-state" / "progress.json").is_file()
    saved = {e["path"]: e for e in recorder.of("checkpoint")}
    final = saved[str(model / "test_lora.safetensors")]
    assert final["bytes"] == (model / "test_lora.safetensors").stat().st_size and final["kind"] == "final"
    assert not list(model.glob("*.tmp")) and not list(model.glob(".*"))  # no temp files left behind


def test_kohya_keys_and_real_alpha(finished_run):
    folder, _, _ = finished_run
    tensors = load_file(folder / "model" / "test_lora.safetensors")
    downs = [k for k in tensors if k.endswith(".lora_down.weight")]
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight" in tensors
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight" in tensors
    assert "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight" in tensors  # 1x1 conv in SD1
    for key in downs:
        module = key[: -len(".lora_down.weight")]
        assert tensors[key].shape[0] == 8  # rank
        assert tensors[f"{module}.alpha"].item() == 2.0  # the alpha trained with, not the rank
        assert tensors[f"{module}.lora_up.weight"].shape[1] == 8
        assert tensors[key].dtype == torch.float16


def test_saved_file_loads_in_diffusers_and_reproduces_the_trained_model(finished_run):
    from diffusers import StableDiffusionPipeline

    from engine.tiny_model import ensure_tiny_model

    folder, _, trainer = finished_run
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 16, 16, generator=generator)
    timesteps = torch.tensor([150, 700])
    ids = trainer.model.tokenizer(
        ["ohwx shape, red circle", "a blue square"], padding="max_length", max_length=77, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        trained_hidden = trainer._unwrapped("te")(ids)[0]
        trained = trainer._unwrapped("unet")(latents, timesteps, trained_hidden).sample

    pipe = StableDiffusionPipeline.from_pretrained(ensure_tiny_model(), local_files_only=True, safety_checker=None)
    with torch.no_grad():
        base = pipe.unet(latents, timesteps, pipe.text_encoder(ids)[0]).sample
    pipe.load_lora_weights(str(folder / "model" / "test_lora.safetensors"))
    with torch.no_grad():
        loaded_hidden = pipe.text_encoder(ids)[0]
        loaded = pipe.unet(latents, timesteps, loaded_hidden).sample

    assert (trained - base).abs().max() > 1e-2  # the LoRA changed the model...
    assert (loaded_hidden - trained_hidden).abs().max() < 1e-3  # ...and the file reproduces it
    assert (loaded - trained).abs().max() < 1e-3


def test_metadata_a1111_reads(finished_run):
    folder, recorder, _ = finished_run
    path = folder / "model" / "test_lora.safetensors"
    with safe_open(str(path), "pt") as handle:
        meta = handle.metadata()
    assert meta["ss_network_module"] == "networks.lora"
    assert meta["ss_network_dim"] == "8" and meta["ss_network_alpha"] == "2"
    assert meta["ss_base_model_version"] == "sd_v1" and meta["ss_v2"] == "False"
    assert meta["ss_output_name"] == "test_lora"
    assert meta["ss_steps"] == "40" and meta["ss_epoch"] == "2" and meta["ss_num_epochs"] == "2"
    assert meta["ss_num_train_images"] == "80"  # 8 images x 10 repeats
    assert meta["ss_unet_lr"] == "0.001" and meta["ss_text_encoder_lr"] == "0.0005"
    assert meta["ss_optimizer"].endswith("AdamW") and meta["ss_lr_scheduler"] == "constant"
    assert meta["ss_mixed_precision"] == "no" and meta["ss_seed"] == "7" and meta["ss_resolution"] == "(128, 128)"
    assert json.loads(meta["ss_dataset_dirs"]) == {"10_ohwx shape": {"n_repeats": 10, "img_count": 8}}
    tags = json.loads(meta["ss_tag_frequency"])["10_ohwx shape"]
    assert tags["ohwx shape"] == 8
    assert abs(int(meta["ss_training_started_at"]) - recorder.of("run_started")[0]["t"]) < 120
    # sshs_model_hash: sha256 of the bytes after the safetensors header, as A1111 computes it.
    raw = path.read_bytes()
    header = struct.unpack("<Q", raw[:8])[0]
    assert meta["sshs_model_hash"] == hashlib.sha256(raw[8 + header :]).hexdigest()
    epoch_meta = safe_open(str(folder / "model" / "test_lora-000001.safetensors"), "pt").metadata()
    assert epoch_meta["ss_steps"] == "20" and epoch_meta["ss_epoch"] == "1"


def test_stop_then_resume_continues_exactly_where_it_stopped(project, tmp_path_factory):
    """Stop mid-epoch, resume from the saved state: the run goes on at the next step and data
    position, and ends with the same LoRA as the uninterrupted run of the same config."""
    import shutil

    from tests.conftest import SAMPLE

    baseline = tmp_path_factory.mktemp("uninterrupted")
    shutil.copytree(SAMPLE / "img", baseline / "img")
    uninterrupted_events, _ = train_in_process(write_config(baseline, small_config()))
    config = write_config(project, small_config())

    def stop_at_13(event, stop):
        if event["type"] == "step" and event["step"] == 13:
            stop.request("request")

    first, _ = train_in_process(config, on_event=stop_at_13)
    stopped = first.of("stopped")[0]
    assert stopped["step"] == 13 and stopped["epoch"] == 1 and first.events[-1]["type"] == "stopped"
    assert (project / "model" / "test_lora-step00000013.safetensors").is_file()

    second, _ = train_in_process(config, resume=stopped["state"])
    started = second.of("run_started")[0]
    assert started["start_step"] == 13 and started["resumed_from"] == stopped["state"]
    assert len(started["loss_history"]) == 13
    assert started["elapsed_s"] == pytest.approx(first.of("step")[-1]["elapsed_s"])
    steps = second.of("step")
    assert steps[0]["step"] == 14 and steps[0]["epoch"] == 1 and steps[-1]["step"] == 40
    assert steps[0]["elapsed_s"] > started["elapsed_s"]  # training time continues, not restarts
    assert second.events[-1]["type"] == "finished"

    losses = [s["loss"] for s in first.of("step") + steps]
    assert losses == pytest.approx([s["loss"] for s in uninterrupted_events.of("step")], abs=1e-6)
    resumed = load_file(project / "model" / "test_lora.safetensors")
    uninterrupted = load_file(baseline / "model" / "test_lora.safetensors")
    assert resumed.keys() == uninterrupted.keys()
    worst = max((resumed[k].float() - uninterrupted[k].float()).abs().max().item() for k in resumed)
    assert worst < 1e-6, worst

    # A second resume from the same state would overwrite what the first one saved after it.
    final = project / "model" / "test_lora.safetensors"
    stamp = final.stat().st_mtime_ns
    with pytest.raises(UserError) as info:
        train_in_process(config, resume=stopped["state"])
    assert info.value.where == "output.name" and "saved after the state you resume from" in info.value.message
    assert "--overwrite" in info.value.fix and final.stat().st_mtime_ns == stamp


def test_a_second_run_never_overwrites_the_first_ones_lora(finished_run):
    """The same config again: the engine refuses before loading anything, and says how to go on;
    the earlier LoRA and states are untouched."""
    folder, _, _ = finished_run
    model = folder / "model"
    stamps = {path.name: path.stat().st_mtime_ns for path in model.iterdir()}
    with pytest.raises(UserError) as info:
        train_in_process(folder / "loratui.toml")
    assert info.value.where == "output.name"
    assert info.value.message.startswith("model/test_lora.safetensors exists from an earlier run")
    assert "set another output.name" in info.value.fix and "--overwrite" in info.value.fix
    assert {path.name: path.stat().st_mtime_ns for path in model.iterdir()} == stamps


def test_resuming_from_an_epoch_state_of_a_run_that_went_on_is_refused(finished_run):
    """Epoch 1's state of a finished 2-epoch run: resuming would overwrite its final LoRA."""
    folder, _, _ = finished_run
    with pytest.raises(UserError) as info:
        train_in_process(folder / "loratui.toml", resume=str(folder / "model" / "test_lora-000001-state"))
    assert info.value.where == "output.name" and "saved after the state you resume from" in info.value.message


def test_what_killed_saves_left_is_cleaned_up_when_the_engine_starts(finished_run):
    """Only loratui's own temp names for this run's name go; a state folder left moved aside
    while its replacement never arrived is put back, not deleted."""
    folder, _, _ = finished_run
    model = folder / "model"
    leftovers = [
        model / ".test_lora-000001.safetensors.0123456789ab.tmp",
        model / ".test_lora.safetensors.a1b2c3d4e5f6.tmp",
    ]
    for path in leftovers:
        path.write_bytes(b"half a LoRA")
    (model / ".test_lora-step00000007-state.00112233aabb.tmp").mkdir()
    (model / "test_lora-state").rename(model / ".test_lora-state.old")  # killed between the two renames
    kept = [
        model / ".other_lora.safetensors.0123456789ab.tmp",
        model / "notes.tmp",
        model / ".test_lora.safetensors.tmp",
    ]
    for path in kept:
        path.write_text("not loratui's, or not this run's")
    with pytest.raises(UserError):  # then it refuses to overwrite, as above: nothing is trained
        train_in_process(folder / "loratui.toml")
    assert not any(path.exists() for path in leftovers)
    assert not (model / ".test_lora-step00000007-state.00112233aabb.tmp").exists()
    assert (model / "test_lora-state" / "progress.json").is_file() and not (model / ".test_lora-state.old").exists()
    assert all(path.exists() for path in kept)
    for path in kept:
        path.unlink()


def test_resume_from_an_epoch_state(finished_run, project):
    import shutil

    state = finished_run[0] / "model" / "test_lora-000001-state"
    shutil.copytree(state, project / "resume-here")
    recorder, _ = train_in_process(write_config(project, small_config()), resume=str(project / "resume-here"))
    assert recorder.of("run_started")[0]["start_step"] == 20
    assert recorder.of("step")[0]["step"] == 21 and recorder.of("step")[0]["epoch"] == 2


def test_resume_refuses_another_network(finished_run, project):
    state = finished_run[0] / "model" / "test_lora-000001-state"
    config = write_config(project, small_config(network={"rank": 4, "alpha": 2.0}))
    with pytest.raises(UserError) as info:
        train_in_process(config, resume=str(state))
    assert info.value.where == "training.resume_from" and "rank" in info.value.message


@pytest.mark.parametrize(
    "options",
    [
        pytest.param(
            {
                "model": {"v_prediction": True, "clip_skip": 2},
                "training": {
                    "min_snr_gamma": 5.0,
                    "noise_offset": 0.05,
                    "gradient_checkpointing": True,
                    "gradient_accumulation_steps": 2,
                },
            },
            id="vpred-minsnr-offset-checkpointing-accum",
        ),
        pytest.param(
            {
                "network": {"conv_rank": 4, "conv_alpha": 1.0},
                "dataset": {"cache_latents": "off"},
                "optimizer": {"text_encoder_lr": 0.0},
            },
            id="locon-nocache-frozen-te",
        ),
        pytest.param({"training": {"mixed_precision": "bf16"}}, id="bf16"),
    ],
)
def test_training_options(project, options, monkeypatch):
    if options.get("training", {}).get("mixed_precision") == "bf16":
        # bf16's arithmetic under autocast, on the CPU: loratui refuses bf16 without a bf16 GPU
        # (tests/test_check_corpus.py), so the rule is lifted for this test of the numerics.
        from loratui import preflight

        monkeypatch.setattr(preflight, "precision_problems", lambda precision, machine: [])
    data = small_config(**options)
    data["training"].update({"max_train_steps": 6})
    recorder, _ = train_in_process(write_config(project, data))
    steps = recorder.of("step")
    assert len(steps) == 6 and all(math.isfinite(s["loss"]) for s in steps)
    tensors = load_file(project / "model" / "test_lora.safetensors")
    if options.get("network", {}).get("conv_rank"):
        conv = "lora_unet_down_blocks_0_resnets_0_conv1"
        assert tensors[f"{conv}.lora_down.weight"].shape[:2] == (4, 32) and tensors[f"{conv}.alpha"].item() == 1.0
        assert not any(k.startswith("lora_te_") for k in tensors)  # text encoder frozen: no TE keys
    if options.get("training", {}).get("gradient_accumulation_steps") == 2:
        assert recorder.of("run_started")[0]["steps_per_epoch"] == 10


@pytest.mark.parametrize(
    "name,args,lr",
    [
        ("AdamW8bit", [], 1e-3),
        ("Lion", [], 1e-4),
        ("Lion8bit", [], 1e-4),
        ("Prodigy", [], 1.0),
        ("DAdaptAdam", ["decouple=True", "weight_decay=0.01", "betas=0.9,0.999"], 1.0),
        ("Adafactor", ["relative_step=True", "scale_parameter=True", "warmup_init=True"], 1e-3),
    ],
)
def test_every_optimizer_trains(project, name, args, lr):
    te_lr = lr if name in ("Prodigy", "DAdaptAdam") else lr / 2  # these take one LR for all groups
    data = small_config(
        optimizer={
            "name": name,
            "args": args,
            "unet_lr": lr,
            "text_encoder_lr": te_lr,
            "scheduler": "cosine_with_restarts",
            "scheduler_cycles": 2,
        }
    )
    data["training"].update({"max_train_steps": 4})
    recorder, trainer = train_in_process(write_config(project, data))
    assert len(recorder.of("step")) == 4
    # The optimizer really moved the LoRA: the up-projections start at zero.
    ups = [v for k, v in load_file(project / "model" / "test_lora.safetensors").items() if k.endswith("lora_up.weight")]
    assert any(t.abs().max() > 0 for t in ups)


def test_disk_latent_cache_is_reused(project):
    data = small_config(dataset={"cache_latents": "disk"})
    data["training"].update({"max_train_steps": 2})
    config = write_config(project, data)
    train_in_process(config)
    cached = sorted((project / "model" / ".latent-cache").glob("*.safetensors"))
    assert len(cached) == 8
    stamps = [p.stat().st_mtime_ns for p in cached]
    recorder, _ = train_in_process(config, overwrite=True)  # the same run again, over its own LoRA
    assert [p.stat().st_mtime_ns for p in cached] == stamps
    caching = [e for e in recorder.of("status") if e["phase"] == "caching_latents"]
    assert caching[0]["current"] == 8  # everything came from disk before any encoding


class _Evil:
    def __reduce__(self):
        return (print, ("this ran while unpickling",))


def test_ckpt_that_needs_pickle_is_refused(project):
    bad = project / "model.ckpt"
    with open(bad, "wb") as handle:
        pickle.dump({"state_dict": _Evil()}, handle)
    with pytest.raises(UserError) as info:
        train_in_process(write_config(project, small_config(model={"path": "model.ckpt"})))
    assert info.value.where == "model.path" and "pickle" in info.value.message


def test_corrupt_safetensors_model_is_a_clear_error(project):
    (project / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(UserError) as info:
        train_in_process(write_config(project, small_config(model={"path": "model.safetensors"})))
    assert info.value.where == "model.path" and "safetensors" in info.value.message


def test_folder_that_is_not_a_diffusers_model(project):
    (project / "not-a-model").mkdir()
    with pytest.raises(UserError) as info:
        train_in_process(write_config(project, small_config(model={"path": "not-a-model"})))
    assert "not a diffusers model folder" in info.value.message and "unet/" in info.value.message


@pytest.mark.slow
def test_same_seed_same_losses_whether_the_builtin_model_was_just_built_or_loaded(project, tmp_path, monkeypatch):
    """Building the tiny model draws random weights; the run that builds it must not differ."""
    data = small_config()
    data["training"]["max_train_steps"] = 3
    config = write_config(project, data)
    monkeypatch.setenv("LORATUI_CACHE_DIR", str(tmp_path / "fresh-cache"))
    built, _ = train_in_process(config)
    loaded, _ = train_in_process(config, overwrite=True)
    assert [s["loss"] for s in built.of("step")] == [s["loss"] for s in loaded.of("step")]


def test_spill_watch_turns_slow_steps_on_a_full_gpu_into_one_warning_event():
    """The engine's side of the spill-over warning: NVML says the GPU is full, steps slow down
    tenfold, and a `vram_spill` warning event is written, once."""
    from engine.events import EventWriter
    from engine.spill_watch import SpillWatch
    from loratui.gpu import GpuDevice, GpuSnapshot
    from tests.conftest import Recorder

    class FullGpu:
        def read(self):
            device = GpuDevice(
                index=0,
                name="NVIDIA GeForce RTX 4090",
                uuid="GPU-1",
                memory_total=24 * 2**30,
                memory_used=int(23.6 * 2**30),
                memory_free=int(0.4 * 2**30),
                utilization_gpu=100,
                temperature_c=70,
                power_w=300.0,
                power_limit_w=450.0,
                processes=[],
            )
            return GpuSnapshot(available=True, reason=None, driver_version="550.54", devices=[device], taken_at=0.0)

        def close(self):
            pass

    recorder = Recorder()
    watch = SpillWatch(EventWriter(recorder), torch.device("cpu"))
    watch.telemetry, watch.nvml_index = FullGpu(), 0
    for step in range(1, 41):
        watch.after_step(step, 1.2)
    assert recorder.of("warning") == []  # a full GPU at a steady pace is fine
    for step in range(41, 61):
        watch.after_step(step, 14.0)
    (warning,) = recorder.of("warning")
    assert warning["code"] == "vram_spill"
    assert "14" in warning["message"] and "1.2" in warning["message"]
    assert "training.batch_size" in warning["hint"] and "gradient_checkpointing = true" in warning["hint"]
