"""The training objective's kohya options, each shown by its effect: multires and offset noise, input
perturbation, the timestep range, the loss types and their huber schedules, the SNR-based weights, the
prior loss weight, and training the text encoder alone; and the check's refusals of what cannot run.

The numbers expected are sd-scripts' (library/train_util.py, library/custom_train_functions.py @48d368fa),
worked out by hand where they are short."""

from __future__ import annotations

import math
import shutil
from types import SimpleNamespace

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from engine import flow_matching, losses
from engine.diffusion import DenoisingObjective, DenoisingSettings
from engine.families.flux import FlowObjective
from engine.noise import NoiseSettings, perturbed, pyramid_noise, training_noise, with_offset
from engine.train import Trainer
from tests.conftest import SAMPLE, small_config, train_in_process, write_config


def _sd_scheduler(prediction_type: str = "epsilon"):
    """SD 1.5's noise schedule (scaled_linear, 0.00085 .. 0.012, 1000 steps)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type=prediction_type
    )


def _channel_mean_variance(noise: torch.Tensor) -> float:
    """The variance of each image channel's spatial mean: the noise's lowest-frequency power."""
    return noise.mean(dim=(2, 3)).var().item()


# --------------------------------------------------------------------------- multires (pyramid) noise


def test_multires_noise_is_unit_std_with_far_more_low_frequency_power_than_white_noise():
    torch.manual_seed(0)
    shape = (64, 4, 32, 32)
    white = torch.randn(shape)
    pyramid = pyramid_noise(torch.randn(shape), iterations=6, discount=0.8)
    assert pyramid.std().item() == pytest.approx(1.0, abs=1e-5)  # divided by its own std, as sd-scripts
    # White noise's channel mean has variance 1 / (32 x 32); the coarse layers are nearly constant over the image.
    assert _channel_mean_variance(white) == pytest.approx(1 / 1024, rel=0.3)
    assert _channel_mean_variance(pyramid) > 20 * _channel_mean_variance(white)


def test_multires_low_frequency_power_grows_with_the_discount_and_discount_zero_is_white():
    shape = (64, 4, 32, 32)
    variances = []
    for discount in (0.0, 0.3, 0.6, 0.9):
        torch.manual_seed(1)
        variances.append(_channel_mean_variance(pyramid_noise(torch.randn(shape), 8, discount)))
    assert variances == sorted(variances) and variances[-1] > 10 * variances[1]
    # discount 0 keeps only layer 0, full size (r^0 = 1): white noise again, the sum rescaled to std 1.
    assert variances[0] == pytest.approx(1 / 1024, rel=0.3)


def test_multires_stops_at_a_one_pixel_layer(monkeypatch):
    """However many iterations are asked, a 4x4 latent has at most 2 coarser layers (4 / r^i hits 1 by i = 2)."""
    torch.manual_seed(2)
    drawn = []
    real_randn = torch.randn

    def counting_randn(*size, **kwargs):
        drawn.append(size)
        return real_randn(*size, **kwargs)

    noise = torch.randn(2, 4, 4, 4)
    monkeypatch.setattr(torch, "randn", counting_randn)
    pyramid_noise(noise, iterations=50, discount=0.5)
    assert 2 <= len(drawn) <= 3 and drawn[0] == (2, 4, 4, 4) and min(drawn[-1][2:]) == 1


def test_training_noise_applies_offset_then_multires_as_sd_scripts_does():
    latents = torch.zeros(256, 4, 16, 16)
    torch.manual_seed(3)
    plain = training_noise(latents, NoiseSettings())
    torch.manual_seed(3)
    both = training_noise(latents, NoiseSettings(offset=0.5, multires_iterations=6, multires_discount=0.5))
    assert plain.std().item() == pytest.approx(1.0, abs=0.01)
    assert both.std().item() == pytest.approx(1.0, abs=1e-5)  # pyramid noise last: the sum is rescaled
    assert _channel_mean_variance(both) > 10 * _channel_mean_variance(plain)


# --------------------------------------------------------------------------- noise offset


def test_adaptive_noise_scale_raises_each_channels_offset_by_its_absolute_mean():
    latents = torch.zeros(4000, 2, 8, 8)
    latents[:, 1] = -10.0  # channel 1's mean is -10, |mean| 10; channel 0's is 0
    torch.manual_seed(4)
    offset = with_offset(latents, torch.zeros_like(latents), 0.05, adaptive_scale=0.1)
    constants = offset[:, :, 0, 0]
    assert torch.equal(offset, constants[:, :, None, None].expand_as(offset))  # one constant per image and channel
    assert constants[:, 0].std().item() == pytest.approx(0.05, rel=0.1)
    assert constants[:, 1].std().item() == pytest.approx(0.05 + 0.1 * 10, rel=0.1)
    # A negative scale lowers it, never below 0.
    assert with_offset(latents, torch.zeros_like(latents), 0.05, adaptive_scale=-1.0)[:, 1].abs().max() == 0


def test_random_offset_strength_draws_it_between_zero_and_the_offset():
    latents = torch.zeros(64, 4, 32, 32)
    torch.manual_seed(5)
    # Each call draws one strength s in [0, 0.2) for the batch: E[s^2] = 0.2^2 / 3, where a fixed one gives 0.2^2
    # (plus the white noise's own 1 / (32 x 32)).
    for random_strength, power in ((False, 0.2**2), (True, 0.2**2 / 3)):
        settings = NoiseSettings(offset=0.2, offset_random_strength=random_strength)
        powers = [_channel_mean_variance(training_noise(latents, settings)) for _ in range(300)]
        assert sum(powers) / len(powers) == pytest.approx(power + 1 / 1024, rel=0.15)


# --------------------------------------------------------------------------- input perturbation


def test_input_perturbation_moves_the_input_but_not_the_target():
    scheduler = _sd_scheduler()
    objective = DenoisingObjective(scheduler, DenoisingSettings(noise=NoiseSettings(ip_gamma=0.1)))
    torch.manual_seed(6)
    latents, noise = torch.randn(8, 4, 16, 16), torch.randn(8, 4, 16, 16)
    timesteps = torch.full((8,), 999)
    input_noise = objective.input_noise(noise)
    assert (input_noise - noise).std().item() == pytest.approx(0.1, rel=0.05)
    noisy, target = objective.noisy_and_target(latents, noise, timesteps, input_noise)
    plain_noisy, plain_target = objective.noisy_and_target(latents, noise, timesteps)
    assert torch.equal(target, noise) and torch.equal(plain_target, noise)  # epsilon: the unperturbed noise
    sigma = (1 - scheduler.alphas_cumprod[999]).sqrt()
    assert torch.allclose(noisy - plain_noisy, sigma * (input_noise - noise), atol=1e-5)
    # Off: the input noise is the noise itself.
    assert perturbed(noise, NoiseSettings()) is noise


def test_input_perturbation_random_strength_stays_below_gamma():
    noise = torch.zeros(1, 4, 32, 32)
    settings = NoiseSettings(ip_gamma=0.1, ip_random_strength=True)
    torch.manual_seed(7)
    strengths = [perturbed(noise, settings).std().item() for _ in range(300)]
    assert max(strengths) < 0.1 * 1.1 and min(strengths) < 0.01
    assert sum(strengths) / len(strengths) == pytest.approx(0.05, rel=0.15)


def test_flux_input_perturbation_moves_the_input_by_sigma_and_keeps_the_flow_target():
    flow = flow_matching.FlowSettings(model_prediction_type="raw")
    objective = FlowObjective(flow, NoiseSettings(ip_gamma=0.2), losses.LossSettings())
    torch.manual_seed(8)
    latents, noise = torch.randn(2, 16, 8, 8), torch.randn(2, 16, 8, 8)
    sigmas = torch.tensor([0.25, 0.75])
    input_noise = objective.input_noise(noise)
    noisy, target = objective.noisy_and_target(latents, noise, sigmas, input_noise)
    assert torch.equal(target, noise - latents)
    expected = (1 - sigmas.view(-1, 1, 1, 1)) * latents + sigmas.view(-1, 1, 1, 1) * input_noise
    assert torch.allclose(noisy, expected)


# --------------------------------------------------------------------------- timesteps


def test_timesteps_stay_in_the_range_and_reach_both_ends():
    objective = DenoisingObjective(_sd_scheduler(), DenoisingSettings(min_timestep=200, max_timestep=260))
    torch.manual_seed(9)
    drawn = objective.draw_timesteps(torch.zeros(5000, 4, 2, 2))
    assert drawn.min().item() == 200 and drawn.max().item() == 259  # [min, max): max itself never drawn
    assert len(drawn.unique()) == 60


# --------------------------------------------------------------------------- loss types


def test_loss_types_match_their_formulas_on_known_errors():
    prediction = torch.tensor([0.0, 3.0, -0.01], dtype=torch.float64).view(1, 3, 1, 1)  # exact small differences
    target = torch.zeros_like(prediction)
    c = torch.tensor([1.0], dtype=torch.float64)
    l2 = losses.elementwise_loss(prediction, target, "l2").flatten().tolist()
    l1 = losses.elementwise_loss(prediction, target, "l1").flatten().tolist()
    huber = losses.elementwise_loss(prediction, target, "huber", c).flatten().tolist()
    smooth = losses.elementwise_loss(prediction, target, "smooth_l1", c / 2).flatten().tolist()
    assert l2 == pytest.approx([0.0, 9.0, 1e-4]) and l1 == pytest.approx([0.0, 3.0, 0.01])
    # huber 2c (sqrt(d^2 + c^2) - c): 2 (sqrt(10) - 1) at d = 3; about d^2 for |d| << c.
    assert huber == pytest.approx([0.0, 4.3245553, 1e-4], rel=1e-4)
    # smooth_l1 2 (sqrt(d^2 + c^2) - c): 2 (sqrt(9.25) - 0.5) at d = 3; about d^2 / c for |d| << c.
    assert smooth == pytest.approx([0.0, 5.0827625, 2e-4], rel=1e-3)


def test_huber_thresholds_per_timestep_by_schedule():
    timesteps = torch.tensor([0, 500, 1000])
    constant = losses.huber_threshold(losses.LossSettings("huber", "constant", 0.1, 2.0), timesteps, 1000)
    exponential = losses.huber_threshold(losses.LossSettings("huber", "exponential", 0.1, 2.0), timesteps, 1000)
    assert constant.tolist() == pytest.approx([0.2, 0.2, 0.2])
    # c^(t/T) x scale: the scale at t = 0, sqrt(c) x scale halfway, c x scale at T.
    assert exponential.tolist() == pytest.approx([2.0, 2 * math.sqrt(0.1), 0.2], rel=1e-5)
    scheduler = _sd_scheduler()
    snr_settings = losses.LossSettings("huber", "snr", 0.1, 2.0)
    snr = losses.huber_threshold(snr_settings, torch.tensor([0, 500, 999]), 1000, scheduler.alphas_cumprod)
    alpha_bar = scheduler.alphas_cumprod[500].item()
    sigma = math.sqrt((1 - alpha_bar) / alpha_bar)
    assert snr[1].item() == pytest.approx(0.9 / (1 + sigma) ** 2 + 0.1, rel=1e-5)  # no huber_scale here
    assert snr[0].item() > 0.9 and snr[2].item() == pytest.approx(0.1, abs=0.01)  # ~1 with no noise, ~c at pure


def test_the_unet_objective_uses_the_schedules_threshold_at_each_samples_timestep():
    settings = DenoisingSettings(loss=losses.LossSettings("huber", "exponential", 0.1, 1.0))
    objective = DenoisingObjective(_sd_scheduler(), settings)
    prediction, target = torch.full((2, 4, 2, 2), 3.0), torch.zeros(2, 4, 2, 2)
    loss = objective.loss(prediction, target, prediction, torch.tensor([0, 1000 - 1]))
    for value, t in zip(loss.tolist(), (0, 999), strict=True):
        c = 0.1 ** (t / 1000)
        assert value == pytest.approx(2 * c * (math.sqrt(9 + c * c) - c), rel=1e-5)


def test_flux_huber_threshold_is_read_at_1000_sigma():
    flow = flow_matching.FlowSettings(model_prediction_type="raw")
    objective = FlowObjective(flow, NoiseSettings(), losses.LossSettings("smooth_l1", "exponential", 0.1, 1.0))
    prediction, target = torch.full((1, 16, 2, 2), 1.0), torch.zeros(1, 16, 2, 2)
    loss = objective.loss(prediction, target, prediction, torch.tensor([0.5])).item()
    c = 0.1**0.5
    assert loss == pytest.approx(2 * (math.sqrt(1 + c * c) - c), rel=1e-5)


# --------------------------------------------------------------------------- SNR-based weights


def _unit_error_loss(settings: DenoisingSettings, prediction_type: str, timesteps: list[int]) -> list[float]:
    """Each sample's loss when every element is off by 1 (its plain l2 loss is 1): the weights alone."""
    objective = DenoisingObjective(_sd_scheduler(prediction_type), settings)
    n = len(timesteps)
    prediction, target = torch.ones(n, 4, 2, 2), torch.zeros(n, 4, 2, 2)
    return objective.loss(prediction, target, target, torch.tensor(timesteps)).tolist()


def _snr(t: int) -> float:
    alpha_bar = _sd_scheduler().alphas_cumprod[t].item()
    return min(alpha_bar / (1 - alpha_bar), 1000.0)


def test_debiased_estimation_weights_by_one_over_sqrt_snr_or_snr_plus_one():
    settings = DenoisingSettings(debiased_estimation_loss=True)
    eps = _unit_error_loss(settings, "epsilon", [0, 500, 999])
    assert eps == pytest.approx([1 / math.sqrt(1000), 1 / math.sqrt(_snr(500)), 1 / math.sqrt(_snr(999))], rel=1e-4)
    assert eps[2] > 10  # the noisiest timestep counts most
    v = _unit_error_loss(settings, "v_prediction", [500, 999])
    assert v == pytest.approx([1 / (_snr(500) + 1), 1 / (_snr(999) + 1)], rel=1e-4)


def test_v_pred_like_loss_and_scale_v_pred_loss_like_noise_pred():
    like = _unit_error_loss(DenoisingSettings(v_pred_like_loss=0.5), "epsilon", [100, 900])
    # loss + loss / (snr / (snr + 1)) x 0.5
    assert like == pytest.approx([1 + 0.5 * (_snr(t) + 1) / _snr(t) for t in (100, 900)], rel=1e-4)
    scaled = _unit_error_loss(DenoisingSettings(scale_v_pred_loss_like_noise_pred=True), "v_prediction", [100, 900])
    assert scaled == pytest.approx([_snr(t) / (_snr(t) + 1) for t in (100, 900)], rel=1e-4)


def test_prior_loss_weight_weights_regularisation_images_only():
    trainer = SimpleNamespace(cfg=SimpleNamespace(training=SimpleNamespace(prior_loss_weight=0.25)), device="cpu")
    batch = [SimpleNamespace(is_reg=False), SimpleNamespace(is_reg=True), SimpleNamespace(is_reg=False)]
    assert Trainer._loss_weights(trainer, batch).tolist() == [1.0, 0.25, 1.0]


# --------------------------------------------------------------------------- runs on the tiny model


@pytest.mark.slow
def test_every_objective_option_trains_with_regularisation_images(project):
    shutil.copytree(SAMPLE / "reg", project / "reg")
    data = small_config(
        training={
            "max_train_steps": 3,
            "noise_offset": 0.05,
            "adaptive_noise_scale": 0.01,
            "noise_offset_random_strength": True,
            "multires_noise_iterations": 6,
            "multires_noise_discount": 0.3,
            "ip_noise_gamma": 0.1,
            "ip_noise_gamma_random_strength": True,
            "min_timestep": 100,
            "max_timestep": 900,
            "loss_type": "huber",
            "huber_schedule": "snr",
            "debiased_estimation_loss": True,
            "v_pred_like_loss": 0.1,
            "prior_loss_weight": 0.5,
        }
    )
    data["dataset"]["reg_dir"] = "reg"
    recorder, _ = train_in_process(write_config(project, data))
    assert [s["step"] for s in recorder.of("step")] == [1, 2, 3]
    assert all(math.isfinite(s["loss"]) for s in recorder.of("step"))
    with safe_open(str(project / "model" / "test_lora.safetensors"), "pt") as handle:
        meta = handle.metadata()
    assert meta["ss_loss_type"] == "huber" and meta["ss_huber_schedule"] == "snr" and meta["ss_huber_c"] == "0.1"
    assert meta["ss_multires_noise_iterations"] == "6" and meta["ss_multires_noise_discount"] == "0.3"
    assert meta["ss_adaptive_noise_scale"] == "0.01" and meta["ss_noise_offset_random_strength"] == "True"
    assert meta["ss_ip_noise_gamma"] == "0.1" and meta["ss_debiased_estimation"] == "True"
    assert meta["ss_prior_loss_weight"] == "0.5" and int(meta["ss_num_reg_images"]) > 0


@pytest.mark.slow
def test_text_encoder_only_trains_the_text_encoder_through_the_frozen_unet(project):
    data = small_config(network={"train_text_encoder_only": True}, training={"max_train_steps": 3})
    recorder, trainer = train_in_process(write_config(project, data))
    steps = recorder.of("step")
    assert len(steps) == 3 and set(steps[0]["lr"]) == {"text_encoder"}
    tensors = load_file(project / "model" / "test_lora.safetensors")
    assert tensors and all(key.startswith("lora_te_") for key in tensors)  # no lora_unet key at all
    # lora_up starts at zero: a non-zero one learned, its gradient through the frozen U-Net.
    assert any(t.abs().max() > 0 for key, t in tensors.items() if key.endswith("lora_up.weight"))
    unet = next(part for part in trainer.parts if part.spec.denoiser)
    assert not unet.trained and not unet.targets
    assert not any(p.requires_grad for p in trainer.accelerator.unwrap_model(unet.module).parameters())
    with safe_open(str(project / "model" / "test_lora.safetensors"), "pt") as handle:
        assert handle.metadata()["ss_training_text_encoder"] == "True"


@pytest.mark.slow
def test_flux_trains_clip_l_alone_with_a_huber_loss_and_input_perturbation(project):
    from tests.test_flux_engine import flux_config

    data = flux_config(
        network={"train_text_encoder_only": True},
        training={
            "max_train_steps": 2,
            "loss_type": "huber",
            "huber_schedule": "exponential",
            "ip_noise_gamma": 0.1,
        },
    )
    recorder, _ = train_in_process(write_config(project, data))
    assert len(recorder.of("step")) == 2 and all(math.isfinite(s["loss"]) for s in recorder.of("step"))
    tensors = load_file(project / "model" / "test_lora.safetensors")
    assert tensors and all(key.startswith("lora_te1_") for key in tensors)  # CLIP-L only: T5 never trains


# --------------------------------------------------------------------------- the check


def _check_lines(project, **sections) -> list[str]:
    from loratui.check import check_run
    from loratui.config import load_config

    data = small_config()
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    result = check_run(load_config(write_config(project, data)))
    return [f"{p.severity} {p.where}: {p.message}" for p in result.problems]


@pytest.mark.parametrize(
    "sections,expected",
    [
        ({"training": {"min_timestep": 500, "max_timestep": 500}}, "error training.min_timestep: min_timestep 500 is"),
        ({"training": {"max_timestep": 1001}}, "error training.max_timestep: max_timestep 1001 is above 1_000"),
        ({"training": {"huber_c": 0.0}}, "error training.huber_c: huber_c 0 must be above 0"),
        (
            {"training": {"multires_noise_iterations": 6, "multires_noise_discount": 1.5}},
            "error training.multires_noise_discount: multires_noise_discount 1.5 is above 1",
        ),
        ({"training": {"adaptive_noise_scale": 0.01}}, "error training.adaptive_noise_scale: adaptive_noise_scale"),
        (
            {"training": {"scale_v_pred_loss_like_noise_pred": True}},
            "error training.scale_v_pred_loss_like_noise_pred: ",
        ),
        (
            {"model": {"v_prediction": True}, "training": {"v_pred_like_loss": 0.1}},
            "error training.v_pred_like_loss: v_pred_like_loss adds",
        ),
        (
            {"training": {"zero_terminal_snr": True, "debiased_estimation_loss": True}},
            "error training.debiased_estimation_loss: debiased_estimation_loss with zero_terminal_snr",
        ),
        (
            {"network": {"train_text_encoder_only": True, "train_unet_only": True}},
            "error network.train_text_encoder_only: train_text_encoder_only and train_unet_only are both true",
        ),
        (
            {"network": {"train_text_encoder_only": True}, "optimizer": {"text_encoder_lr": 0.0}},
            "error network.train_text_encoder_only: train_text_encoder_only freezes the UNet, but "
            "optimizer.text_encoder_lr is 0",
        ),
    ],
)
def test_check_refuses_what_cannot_train(project, sections, expected):
    lines = _check_lines(project, **sections)
    assert any(line.startswith(expected) for line in lines), lines


def test_check_refuses_the_snr_huber_schedule_and_a_frozen_clip_l_on_flux(project):
    from loratui.check import check_run
    from loratui.config import load_config

    data = small_config(
        model={"path": "loratui:tiny-flux", "family": "flux"},
        training={"loss_type": "huber", "mixed_precision": "no"},
        network={"train_text_encoder_only": True},
        optimizer={"text_encoder_lr": 0.0},
    )
    problems = check_run(load_config(write_config(project, data))).problems
    lines = [f"{p.severity} {p.where}: {p.message}" for p in problems if p.severity == "error"]
    assert any(line.startswith("error training.huber_schedule: huber_schedule snr needs") for line in lines), lines
    assert any("(T5-XXL never trains)" in line for line in lines if "train_text_encoder_only" in line), lines


def test_a_good_config_with_every_option_passes_the_check(project):
    training = {"multires_noise_iterations": 8, "loss_type": "smooth_l1", "min_timestep": 10, "prior_loss_weight": 2.0}
    lines = _check_lines(project, training=training, network={"train_text_encoder_only": True})
    assert not [line for line in lines if line.startswith("error")], lines
