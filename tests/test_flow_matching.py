"""The FLUX.1 training objective (engine/flow_matching.py), checked against sd-scripts' formulas.

The expected values are computed here from the formulas as kohya-ss/sd-scripts writes them
(library/flux_train_utils.py: ``time_shift``, ``get_lin_function``, ``get_noisy_model_input_and_timesteps``,
``apply_model_prediction_type``; flux_train_network.py: target = noise - latents) and from diffusers' own
FlowMatchEulerDiscreteScheduler, not from the module's helpers, so a wrong formula there fails here.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from engine.evaluation import EVAL_FRACTIONS
from engine.flow_matching import (
    FlowSettings,
    eval_sigmas,
    flow_target,
    flux_mu,
    loss_weights,
    noisy_input,
    packed_seq_len,
    read_prediction,
    sample_sigmas,
)
from loratui.config import RunConfig
from loratui.params import MODEL_PREDICTION_TYPES, TIMESTEP_SAMPLINGS, WEIGHTING_SCHEMES

SEQ_1024PX = 4096  # a 1024x1024 image: 128x128 latents, 64x64 packed 2x2 patches


def settings(**changes) -> FlowSettings:
    return replace(FlowSettings(), **changes)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def draw(batch: int = 64, seq_len: int = SEQ_1024PX, seed: int = 0, **changes) -> torch.Tensor:
    return sample_sigmas(settings(**changes), batch, seq_len, "cpu", generator=seeded(seed))


def sd_scripts_mu(seq_len: int) -> float:
    """get_lin_function(x1=256, y1=0.5, x2=4096, y2=1.15) at seq_len."""
    slope = (1.15 - 0.5) / (4096 - 256)
    return slope * seq_len + (0.5 - slope * 256)


def sd_scripts_time_shift(mu: float, t: torch.Tensor) -> torch.Tensor:
    """time_shift(mu, 1.0, t), as sd-scripts (and BFL's sampler) write it."""
    return math.exp(mu) / (math.exp(mu) + (1 / t - 1))


def scheduler_sigmas(shift: float) -> torch.Tensor:
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift).sigmas


# --------------------------------------------------------------------------- settings


def test_settings_come_from_a_run_config_with_sd_scripts_defaults():
    cfg = RunConfig()
    assert FlowSettings.from_config(cfg) == FlowSettings("sigma", 1.0, 3.0, "sigma_scaled", "uniform", 0.0, 1.0, 1.29)
    cfg.set("training.timestep_sampling", "shift")
    cfg.set("training.discrete_flow_shift", 3.1582)
    cfg.set("training.model_prediction_type", "raw")
    cfg.set("training.weighting_scheme", "logit_normal")
    flow = FlowSettings.from_config(cfg)
    assert (flow.timestep_sampling, flow.discrete_flow_shift) == ("shift", 3.1582)
    assert (flow.model_prediction_type, flow.weighting_scheme) == ("raw", "logit_normal")


def test_every_declared_choice_is_understood():
    for sampling in TIMESTEP_SAMPLINGS:
        for scheme in WEIGHTING_SCHEMES:
            sigmas = draw(8, timestep_sampling=sampling, weighting_scheme=scheme)
            assert sigmas.shape == (8,) and sigmas.dtype == torch.float32
    for kind in MODEL_PREDICTION_TYPES:
        FlowSettings(model_prediction_type=kind)
    with pytest.raises(ValueError, match="timestep_sampling"):
        FlowSettings(timestep_sampling="logit")


# --------------------------------------------------------------------------- noise levels


def test_packed_sequence_length_and_flux_mu():
    assert packed_seq_len(torch.zeros(2, 16, 128, 128)) == SEQ_1024PX  # 1024 px
    assert packed_seq_len(torch.zeros(1, 16, 64, 96)) == 32 * 48  # 512x768 px
    assert flux_mu(256) == pytest.approx(0.5)
    assert flux_mu(4096) == pytest.approx(1.15)
    for seq_len in (1024, 2304, 6144):  # in between, and beyond 4096 (extrapolated, as FLUX.1 does)
        assert flux_mu(seq_len) == pytest.approx(sd_scripts_mu(seq_len))


def test_shift_3_1582_is_flux_shift_at_1024_px():
    assert math.exp(flux_mu(SEQ_1024PX)) == pytest.approx(3.1582, abs=1e-4)
    flux = draw(4096, seq_len=SEQ_1024PX, timestep_sampling="flux_shift")
    fixed = draw(4096, timestep_sampling="shift", discrete_flow_shift=3.1582)
    torch.testing.assert_close(flux, fixed, atol=1e-5, rtol=0)
    # At 512 px FLUX.1 shifts less, so the two differ.
    smaller = draw(4096, seq_len=SEQ_1024PX // 4, timestep_sampling="flux_shift")
    assert (smaller < fixed).all()


@pytest.mark.parametrize("seq_len", [256, 1024, 4096, 6144])
def test_flux_shift_is_sd_scripts_time_shift_of_a_sigmoid_normal(seq_len):
    sigmoid = torch.sigmoid(1.5 * torch.randn(256, generator=seeded(3)))
    expected = sd_scripts_time_shift(sd_scripts_mu(seq_len), sigmoid)
    got = draw(256, seq_len=seq_len, seed=3, timestep_sampling="flux_shift", sigmoid_scale=1.5)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_sigmoid_and_shift_follow_sd_scripts():
    sigmoid = torch.sigmoid(2.0 * torch.randn(256, generator=seeded(5)))
    torch.testing.assert_close(draw(256, seed=5, timestep_sampling="sigmoid", sigmoid_scale=2.0), sigmoid)
    shift = 3.0
    expected = (sigmoid * shift) / (1 + (shift - 1) * sigmoid)
    got = draw(256, seed=5, timestep_sampling="shift", sigmoid_scale=2.0, discrete_flow_shift=shift)
    torch.testing.assert_close(got, expected)


def test_uniform_is_uniform_and_shift_moves_the_median_toward_noise():
    uniform = draw(20000, timestep_sampling="uniform")
    assert uniform.mean().item() == pytest.approx(0.5, abs=0.01)
    assert uniform.std().item() == pytest.approx(1 / math.sqrt(12), abs=0.01)
    assert draw(20001, timestep_sampling="sigmoid").median().item() == pytest.approx(0.5, abs=0.01)
    # The median of sigmoid(normal) is 0.5; shift k moves it to k 0.5 / (1 + (k - 1) 0.5).
    assert draw(20001, timestep_sampling="shift").median().item() == pytest.approx(0.75, abs=0.01)
    at_1024 = math.exp(1.15) / (math.exp(1.15) + 1)
    assert draw(20001, timestep_sampling="flux_shift").median().item() == pytest.approx(at_1024, abs=0.01)


@pytest.mark.parametrize("shift", [1.0, 3.0, 3.1582])
@pytest.mark.parametrize("scheme", ["uniform", "logit_normal", "mode", "cosmap"])
def test_sigma_mode_picks_entries_of_the_shifted_scheduler(shift, scheme):
    sigmas = draw(2000, timestep_sampling="sigma", weighting_scheme=scheme, discrete_flow_shift=shift)
    assert torch.isin(sigmas, scheduler_sigmas(shift)).all()
    assert len(sigmas.unique()) > 300  # spread over the table, not stuck on a few entries
    if shift == 1.0:  # the unshifted table: 1/1000 ... 1000/1000
        torch.testing.assert_close(sigmas * 1000, (sigmas * 1000).round())


def test_sigma_mode_draws_by_the_weighting_scheme_density():
    # uniform: every entry equally likely, so the mean is the table's mean.
    table = scheduler_sigmas(3.0)
    uniform = draw(40000, timestep_sampling="sigma", discrete_flow_shift=3.0)
    assert uniform.mean().item() == pytest.approx(table.mean().item(), abs=0.01)
    # logit_normal: index = floor(1000 sigmoid(N(mean, std))), and the table runs from sigma 1 down,
    # so the median index is 1000 sigmoid(mean): a positive mean favours LOW noise (as sd-scripts and diffusers).
    lognorm = draw(
        40001, timestep_sampling="sigma", weighting_scheme="logit_normal", logit_mean=2.0, discrete_flow_shift=1.0
    )
    assert lognorm.median().item() == pytest.approx(1 - 1 / (1 + math.exp(-2.0)), abs=0.01)
    # mode with mode_scale 0 is uniform; a positive scale piles draws up in the middle.
    flat = draw(40000, timestep_sampling="sigma", weighting_scheme="mode", mode_scale=0.0, discrete_flow_shift=1.0)
    peaked = draw(40000, timestep_sampling="sigma", weighting_scheme="mode", mode_scale=1.29, discrete_flow_shift=1.0)
    assert share_in_middle(flat) == pytest.approx(0.5, abs=0.01)
    assert share_in_middle(peaked) > 0.6


def share_in_middle(sigmas: torch.Tensor) -> float:
    return ((sigmas > 0.25) & (sigmas < 0.75)).float().mean().item()


def test_extreme_densities_stay_on_the_table():
    # sigmoid(N(10, 10)) rounds to 1.0 in float32 about half the time: index 1000, past sd-scripts' table.
    high = draw(2000, timestep_sampling="sigma", weighting_scheme="logit_normal", logit_mean=10.0, logit_std=10.0)
    assert torch.isin(high, scheduler_sigmas(3.0)).all()
    for scale in (-10.0, 10.0):  # outside SD3's [-1, 1.75], u leaves [0, 1]
        wild = draw(2000, timestep_sampling="sigma", weighting_scheme="mode", mode_scale=scale)
        assert torch.isin(wild, scheduler_sigmas(3.0)).all()


@pytest.mark.parametrize("sampling", TIMESTEP_SAMPLINGS)
@pytest.mark.parametrize("sigmoid_scale", [1.0, 100.0])
def test_levels_are_float32_in_zero_one(sampling, sigmoid_scale):
    sigmas = draw(5000, timestep_sampling=sampling, sigmoid_scale=sigmoid_scale)
    assert sigmas.dtype == torch.float32 and sigmas.shape == (5000,)
    assert (sigmas > 0).all() and (sigmas <= 1).all()
    assert sigmas.min() >= 1e-3  # never so small that sigma_sqrt's 1 / sigma^2 overflows
    assert torch.isfinite(1 / sigmas**2).all()


@pytest.mark.parametrize("sampling", TIMESTEP_SAMPLINGS)
def test_a_seed_gives_the_same_levels_and_another_seed_others(sampling):
    first = draw(16, seed=11, timestep_sampling=sampling, weighting_scheme="logit_normal")
    assert torch.equal(first, draw(16, seed=11, timestep_sampling=sampling, weighting_scheme="logit_normal"))
    assert not torch.equal(first, draw(16, seed=12, timestep_sampling=sampling, weighting_scheme="logit_normal"))
    unseeded = sample_sigmas(settings(timestep_sampling=sampling), 16, SEQ_1024PX, torch.device("cpu"))
    assert unseeded.shape == (16,) and unseeded.device.type == "cpu"


def test_eval_levels_are_the_fractions_unshifted():
    assert [eval_sigmas(f) for f in EVAL_FRACTIONS] == [0.1, 0.3, 0.5, 0.7, 0.9]
    for wrong in (0.0, 1.5):
        with pytest.raises(ValueError, match="eval noise level"):
            eval_sigmas(wrong)


# --------------------------------------------------------------------------- input, target, prediction


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Latents, noise and distinct per-image levels, in float64 so identities hold to rounding."""
    gen = seeded(seed)
    latents = torch.randn(3, 16, 8, 6, generator=gen, dtype=torch.float64)
    noise = torch.randn(3, 16, 8, 6, generator=gen, dtype=torch.float64)
    return latents, noise, torch.tensor([0.25, 0.5, 1.0], dtype=torch.float64)


def test_noisy_input_walks_the_straight_path_from_latents_to_noise():
    latents, noise, sigmas = batch()
    noisy = noisy_input(latents, noise, sigmas)
    assert noisy.shape == latents.shape
    torch.testing.assert_close(noisy[0], 0.75 * latents[0] + 0.25 * noise[0])  # each image its own level
    torch.testing.assert_close(noisy[1], (latents[1] + noise[1]) / 2)
    torch.testing.assert_close(noisy[2], noise[2])  # sigma 1: pure noise
    torch.testing.assert_close(noisy_input(latents, noise, torch.zeros(3, dtype=torch.float64)), latents)


def test_the_target_is_the_paths_velocity():
    latents, noise, sigmas = batch(1)
    step = 1e-3
    moved = (noisy_input(latents, noise, sigmas + step) - noisy_input(latents, noise, sigmas)) / step
    torch.testing.assert_close(moved, flow_target(latents, noise))
    torch.testing.assert_close(flow_target(latents, noise), noise - latents)


def mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.mse_loss(a, b).item()


def test_raw_a_perfect_velocity_model_has_zero_loss():
    latents, noise, sigmas = batch(2)
    noisy, target = noisy_input(latents, noise, sigmas), flow_target(latents, noise)
    raw = settings(model_prediction_type="raw")
    assert read_prediction(raw, target, noisy, sigmas) is target
    assert mse(read_prediction(raw, target, noisy, sigmas), target) == 0.0
    assert mse(read_prediction(raw, noise, noisy, sigmas), target) > 0.5  # an epsilon model would not


def test_additive_adds_the_noisy_input():
    latents, noise, sigmas = batch(3)
    noisy, target = noisy_input(latents, noise, sigmas), flow_target(latents, noise)
    additive = settings(model_prediction_type="additive")
    output = torch.randn(latents.shape, generator=seeded(9), dtype=torch.float64)
    torch.testing.assert_close(read_prediction(additive, output, noisy, sigmas), output + noisy)
    assert mse(read_prediction(additive, target - noisy, noisy, sigmas), target) == pytest.approx(0.0, abs=1e-20)


def test_sigma_scaled_reads_the_noisy_input_minus_sigma_times_the_output():
    latents, noise, sigmas = batch(4)
    noisy, target = noisy_input(latents, noise, sigmas), flow_target(latents, noise)
    scaled = settings(model_prediction_type="sigma_scaled")
    # The output that this reading turns into the target has zero loss ...
    output = (noisy - target) / sigmas.view(-1, 1, 1, 1)
    assert mse(read_prediction(scaled, output, noisy, sigmas), target) == pytest.approx(0.0, abs=1e-20)
    # ... while a perfect velocity model is read as the clean latents (SD3's denoised estimate), which
    # sd-scripts still compares with the velocity target for Flux: why its docs recommend raw.
    torch.testing.assert_close(read_prediction(scaled, target, noisy, sigmas), latents)
    assert mse(read_prediction(scaled, target, noisy, sigmas), target) > 0.5


def test_only_sigma_scaled_weights_the_loss():
    sigmas = torch.tensor([0.1, 0.5, 1.0])
    for kind in ("raw", "additive"):
        for scheme in WEIGHTING_SCHEMES:
            assert loss_weights(settings(model_prediction_type=kind, weighting_scheme=scheme), sigmas) is None

    def weights(scheme: str) -> torch.Tensor:
        found = loss_weights(settings(model_prediction_type="sigma_scaled", weighting_scheme=scheme), sigmas)
        assert found.shape == (3,) and found.dtype == torch.float32
        return found

    torch.testing.assert_close(weights("sigma_sqrt"), torch.tensor([100.0, 4.0, 1.0]))  # 1 / sigma^2
    # cosmap 2 / (pi (1 - 2 sigma + 2 sigma^2)): at 0.5 it is 4 / pi, at 1 (and 0) 2 / pi.
    cosmap = torch.tensor([2 / (math.pi * (1 - 0.2 + 0.02)), 4 / math.pi, 2 / math.pi])
    torch.testing.assert_close(weights("cosmap"), cosmap)
    for scheme in ("uniform", "none", "logit_normal", "mode"):  # these shape the draws, not the loss
        torch.testing.assert_close(weights(scheme), torch.ones(3))
