"""The CUDA paths on a real GPU: training a full-size SD 1.5, SDXL and FLUX.1 dev (random weights), and NVML.

Run on a machine with an NVIDIA GPU (not timed yet: expect a few minutes for SD 1.5 and SDXL on an
H100 and several more for Flux; the first half-minute or so builds the 2 GB ``loratui:sd15-random``
model into the test session's private cache, the SDXL entries first build the 6.9 GB
``loratui:sdxl-random``: minutes, with its 10 GB float32 UNet in RAM on the way, and the Flux entries
the ~17 GB ``loratui:flux-random``: minutes more, and each Flux entry loads it twice, for the run and
for the reload check; ``-k "not sdxl and not flux"`` leaves them out):

    pytest -m gpu tests/test_gpu_train.py -v -rA

Set ``LORATUI_GPU_MODEL_CACHE=/some/dir`` to build the models there once and reuse them in later
runs. Without CUDA the whole module is skipped, with the reason. The harness these tests use is
proven on the CPU by tests/test_gpu_harness.py (with the tiny SD, the tiny SDXL and a tiny Flux of
FLUX.1's width, the Flux recipe in small: bf16, fp8, block swap).

1. Training matrix (``MATRIX``): ``loratui:sd15-random`` (the published SD 1.5 UNet, VAE and
   CLIP-L text encoder shapes) at 512 px, 5 steps per run, LoRA rank 8 / alpha 4. Each run is
   checked by ``tests.gpu_harness.run_entry``: finite losses, every ``lora_up`` weight moved off
   its zero start, and the saved kohya file, loaded by diffusers' ``load_lora_weights`` on the
   GPU, reproduces the trained UNet's (and text encoder's) output, in float32 and in the training
   precision (see that module for the tolerances and why).

   The full product of the issue's factors is 2 batch sizes x 2 precisions x 5 optimizers x
   checkpointing on/off x cached latents on/off x UNet-only/UNet+TE = 320 runs. These 6 cover
   every level of every factor, both precisions with each level of every other factor (batch,
   checkpointing, latent cache, text encoder), and each 8-bit optimizer on the GPU (bitsandbytes'
   CUDA kernels):

   | id                              | prec | batch | optimizer  | checkpointing | latents | trains   |
   |---------------------------------|------|-------|------------|---------------|---------|----------|
   | fp16-b1-adamw-te                | fp16 | 1     | AdamW      | off           | cached  | UNet+TE  |
   | bf16-b4-adamw8bit-gc-nocache    | bf16 | 4     | AdamW8bit  | on            | encoded | UNet     |
   | fp16-b4-lion8bit-gc-te          | fp16 | 4     | Lion8bit   | on            | cached  | UNet+TE  |
   | bf16-b1-adafactor-nocache-te    | bf16 | 1     | Adafactor  | off           | encoded | UNet+TE  |
   | bf16-b4-prodigy                 | bf16 | 4     | Prodigy    | off           | cached  | UNet     |
   | fp16-b1-adamw-gc-nocache        | fp16 | 1     | AdamW      | on            | encoded | UNet     |

   The learning rates are higher than a real run's so that 5 steps change the model clearly
   (the reload comparison needs a measurable LoRA effect).

2. SDXL (``SDXL_MATRIX``): ``loratui:sdxl-random`` (the published SDXL base 1.0 UNet, VAE and
   both text encoders' shapes) at 1024 px in bf16 with gradient checkpointing, 5 steps per run,
   LoRA rank 8 / alpha 4, the VAE in float32 (``model.no_half_vae``, the default). The same checks
   by ``run_entry``, the reload into a ``StableDiffusionXLPipeline``: the UNet's prediction (fed
   both encoders' penultimate states, the pooled vector and the 6 time ids) and, when trained,
   each text encoder's outputs. Two runs: the usual SDXL recipe (UNet only, the encoders' outputs
   cached and the encoders moved off the GPU) and the one that trains the most (UNet and both text
   encoders, latents encoded at every step):

   | id                                             | batch | optimizer | text outputs | latents | trains          |
   |------------------------------------------------|-------|-----------|--------------|---------|-----------------|
   | sdxl-bf16-b2-adamw8bit-gc-unetonly-textcache   | 2     | AdamW8bit | cached (RAM) | cached  | UNet            |
   | sdxl-bf16-b1-adamw-gc-nocache-te1-te2          | 1     | AdamW     | per step     | encoded | UNet+TE1+TE2    |

   The first sets both text encoders' rates and ``network.train_unet_only``: the file must have no
   text-encoder tensor. The rates (2e-3) are a guess not yet tried on a GPU: if a run fails
   because the LoRA's effect does not stand out of bf16's rounding noise, the message says so.

3. FLUX.1 dev (``FLUX_MATRIX``): ``loratui:flux-random`` (FLUX.1 [dev]'s transformer, AE, CLIP-L and
   T5-XXL shapes, random weights, its large matrices stored in float8) at 1024 px in bf16 with the
   frozen weights stored in float8 (``model.fp8_base``), gradient checkpointing, text encoder outputs
   and latents cached, the transformer alone (``network.train_unet_only``, CLIP-L's rate set and
   ignored), AdamW8bit, batch 1, 5 steps, LoRA rank 8 / alpha 4, sd-scripts' advised sampling (shift
   3.1582, raw prediction, guidance 1.0) and T5 captions of 64 tokens (dev's default is 512: the
   captions fit in 64, and the shorter text keeps the steps quick). Once without block swap and once
   with ``training.blocks_to_swap`` 16 (8 double and 16 single blocks kept in CPU memory):

   | id                                                      | fp8 | blocks_to_swap | optimizer | trains      |
   |---------------------------------------------------------|-----|----------------|-----------|-------------|
   | flux-bf16-b1-adamw8bit-fp8-gc-textcache-unetonly        | on  | 0              | AdamW8bit | transformer |
   | flux-bf16-b1-adamw8bit-fp8-swap16-gc-textcache-unetonly | on  | 16             | AdamW8bit | transformer |

   Checked by ``run_entry`` as above, the reload into a ``FluxPipeline`` (its transformer stored in
   float8 too); the file must hold no CLIP-L and no T5 tensor. The float32 half of that comparison
   holds both transformers in float32 on the GPU (2 x 44 GiB): on a GPU of less than
   ``FLUX_MIN_GPU_BYTES`` the entries are skipped, with the reason. Each entry also records torch's
   peak allocated memory after loading (``tests.gpu_harness.PeakMemory``: the set-up window with the
   latent and text caching, and the training loop), prints it with
   ``engine.memory_estimate.estimate`` for the same config, and asserts the estimate within
   ``ESTIMATE_TOLERANCE`` (15 %) of the measured peak: the estimate's total less its CUDA-context
   constant, which torch's allocated figure never contains. The rate (2e-3, as SDXL's) is a guess not
   yet tried on a GPU: the message of a failed comparison says whether it should be raised.

4. NVML on the real driver: the engine runs as a child process (``python -m engine``) while
   ``loratui.gpu.Telemetry().read()`` samples the device: its used memory rises during the run and
   falls back after it, and ``process_memory(snapshot, engine_pid)`` attributes memory to the
   engine's pid (skipped, with the reason, where NVML cannot see that pid, e.g. in a container
   with its own pid namespace).
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time

import pytest
import torch

pytestmark = pytest.mark.gpu

if not torch.cuda.is_available():
    pytest.skip(
        "no CUDA GPU here (torch.cuda.is_available() is False): the GPU suite trains a full-size "
        "SD 1.5, SDXL and FLUX.1 dev on CUDA; tests/test_gpu_harness.py proves its harness on the CPU",
        allow_module_level=True,
    )

from engine.flux_random import FLUX_RANDOM_NAME, ensure_flux_random  # noqa: E402
from engine.reference_models import (  # noqa: E402
    SD15_RANDOM_NAME,
    SDXL_RANDOM_NAME,
    ensure_sd15_random,
    ensure_sdxl_random,
)
from tests.conftest import REPO, write_config  # noqa: E402
from tests.gpu_harness import (  # noqa: E402
    Entry,
    EntryResult,
    entry_config,
    estimated_peak,
    estimated_tensor_bytes,
    make_dataset,
    run_entry,
)

RESOLUTION = 512
SDXL_RESOLUTION = 1024
FLUX_RESOLUTION = 1024
GIB = 1024**3
# The Flux reload check's float32 comparison: FLUX.1's transformer (11.9 B parameters) twice in float32.
FLUX_MIN_GPU_BYTES = 100 * GIB
ESTIMATE_TOLERANCE = 0.15  # |estimate - measured peak| / measured peak (the 15 %)

MATRIX = [
    Entry("fp16-b1-adamw-te", "fp16", 1, "AdamW", 1e-3, train_text_encoder=True),
    Entry(
        "bf16-b4-adamw8bit-gc-nocache", "bf16", 4, "AdamW8bit", 1e-3, gradient_checkpointing=True, cache_latents="off"
    ),
    Entry("fp16-b4-lion8bit-gc-te", "fp16", 4, "Lion8bit", 3e-4, gradient_checkpointing=True, train_text_encoder=True),
    Entry("bf16-b1-adafactor-nocache-te", "bf16", 1, "Adafactor", 1e-3, cache_latents="off", train_text_encoder=True),
    Entry("bf16-b4-prodigy", "bf16", 4, "Prodigy", 1.0, args=("d0=1e-4",)),
    Entry("fp16-b1-adamw-gc-nocache", "fp16", 1, "AdamW", 1e-3, gradient_checkpointing=True, cache_latents="off"),
]

# FLUX.1 dev's low-memory recipe; one entry without block swap and one with it (see the module docstring).
FLUX_RECIPE = dict(
    gradient_checkpointing=True,  # block swap needs it
    family="flux",
    train_unet_only=True,
    cache_text_encoder_outputs="memory",
    fp8_base=True,
    t5_tokens=64,
)
FLUX_MATRIX = [
    Entry("flux-bf16-b1-adamw8bit-fp8-gc-textcache-unetonly", "bf16", 1, "AdamW8bit", 2e-3, **FLUX_RECIPE),
    Entry(
        "flux-bf16-b1-adamw8bit-fp8-swap16-gc-textcache-unetonly",
        "bf16",
        1,
        "AdamW8bit",
        2e-3,
        blocks_to_swap=16,
        **FLUX_RECIPE,
    ),
]

SDXL_MATRIX = [
    Entry(
        "sdxl-bf16-b2-adamw8bit-gc-unetonly-textcache",
        "bf16",
        2,
        "AdamW8bit",
        2e-3,
        gradient_checkpointing=True,
        family="sdxl",
        train_unet_only=True,
        cache_text_encoder_outputs="memory",
    ),
    Entry(
        "sdxl-bf16-b1-adamw-gc-nocache-te1-te2",
        "bf16",
        1,
        "AdamW",
        2e-3,
        gradient_checkpointing=True,
        cache_latents="off",
        family="sdxl",
        train_text_encoder=True,
        train_text_encoder_2=True,
    ),
]


def _built(name: str, ensure):
    """A built-in random model, built once (in $LORATUI_GPU_MODEL_CACHE when set, so later runs
    reuse it; else in the session's private cache)."""
    with pytest.MonkeyPatch.context() as patch:
        persistent = os.environ.get("LORATUI_GPU_MODEL_CACHE")
        if persistent:
            patch.setenv("LORATUI_CACHE_DIR", persistent)
        started = time.perf_counter()
        folder = ensure()
        print(f"\n{name} ready in {time.perf_counter() - started:.0f} s: {folder}")
        yield folder


@pytest.fixture(scope="module")
def sd15_folder():
    yield from _built(SD15_RANDOM_NAME, ensure_sd15_random)


@pytest.fixture(scope="module")
def sdxl_folder():
    yield from _built(SDXL_RANDOM_NAME, ensure_sdxl_random)


@pytest.fixture(scope="module")
def flux_folder():
    total = torch.cuda.get_device_properties(0).total_memory
    if total < FLUX_MIN_GPU_BYTES:
        pytest.skip(
            f"{torch.cuda.get_device_name(0)} has {total / GIB:.0f} GiB: the Flux reload check compares two FLUX.1 "
            f"transformers in float32 on the GPU and needs {FLUX_MIN_GPU_BYTES / GIB:.0f} GiB or more"
        )
    yield from _built(FLUX_RANDOM_NAME, ensure_flux_random)


@pytest.mark.parametrize("entry", MATRIX, ids=lambda e: e.id)
def test_training_matrix_entry(entry, sd15_folder, tmp_path):
    _run_and_report(tmp_path, entry, SD15_RANDOM_NAME, sd15_folder, RESOLUTION)


@pytest.mark.parametrize("entry", SDXL_MATRIX, ids=lambda e: e.id)
def test_sdxl_training_matrix_entry(entry, sdxl_folder, tmp_path):
    _run_and_report(tmp_path, entry, SDXL_RANDOM_NAME, sdxl_folder, SDXL_RESOLUTION)


@pytest.mark.parametrize("entry", FLUX_MATRIX, ids=lambda e: e.id)
def test_flux_training_matrix_entry(entry, flux_folder, tmp_path):
    result = _run_and_report(tmp_path, entry, FLUX_RANDOM_NAME, flux_folder, FLUX_RESOLUTION)
    measured = result.memory.run_peak
    assert measured, f"{entry.id}: no peak memory was recorded (windows opened: {result.memory.opened})"
    memory_estimate = estimated_peak(result)
    estimated = estimated_tensor_bytes(memory_estimate)
    off_by = (estimated - measured) / measured
    print(
        f"  estimate {estimated / GIB:.2f} GiB of tensors ({memory_estimate.total / GIB:.2f} GiB with its CUDA "
        f"context), peak at {memory_estimate.phase}, against {measured / GIB:.2f} GiB measured: {off_by:+.1%}; "
        f"estimate in GiB: { {k: round(v / GIB, 2) for k, v in memory_estimate.breakdown.items()} }"
    )
    assert abs(off_by) <= ESTIMATE_TOLERANCE, (
        f"{entry.id}: the memory estimate {estimated / GIB:.2f} GiB is {off_by:+.1%} off the measured peak "
        f"{measured / GIB:.2f} GiB (torch's allocated bytes after loading; windows "
        f"{ {k: round(v / GIB, 2) for k, v in result.memory.peaks.items() if v is not None} } GiB), more than "
        f"{ESTIMATE_TOLERANCE:.0%}; the estimate's breakdown: {memory_estimate.breakdown}"
    )


def _run_and_report(tmp_path, entry: Entry, model: str, folder, resolution: int) -> EntryResult:
    started = time.perf_counter()
    result = run_entry(tmp_path, entry, model, folder, resolution)
    assert result.device == "cuda", f"the engine trained on {result.device}, not on the GPU"
    # After loading, by window (tests.gpu_harness.PeakMemory); the reload check's own memory is not in it.
    peaks = ", ".join(f"{name} {value / GIB:.2f} GiB" for name, value in result.memory.peaks.items() if value)
    print(
        f"\n{entry.id}: {time.perf_counter() - started:.0f} s with the checks, peak allocated after loading: "
        f"{peaks or 'N/A'}, losses {[round(x, 4) for x in result.losses]}, lora_up weights {result.up_weights}"
    )
    for name, comparison in result.comparisons.items():
        print(f"  {name}: {comparison}")
    return result


# ------------------------------------------------------------------------------------------ NVML
@pytest.fixture(scope="module")
def engine_under_nvml(sd15_folder, tmp_path_factory):
    """Run the engine as a child process (40 steps, batch 1, bf16) and sample NVML every 0.2 s
    from this process, before, during and after it."""
    from engine.spill_watch import _nvml_index
    from loratui.gpu import Telemetry, process_memory

    folder = tmp_path_factory.mktemp("nvml")
    make_dataset(folder, RESOLUTION)
    config = write_config(
        folder, entry_config(Entry("nvml", "bf16", 1, "AdamW", 1e-4, steps=40), SD15_RANDOM_NAME, RESOLUTION)
    )
    gc.collect()
    torch.cuda.empty_cache()  # what this process holds stays constant from here on
    index = _nvml_index(torch.device("cuda", 0))
    telemetry = Telemetry(with_processes=True)
    before = telemetry.read()
    if not before.available:
        telemetry.close()
        pytest.fail(f"NVML gives no reading on a machine where CUDA works: {before.reason}")
    events_path, log_path = folder / "events.jsonl", folder / "engine.log"
    readings = []  # (training has started, device used bytes, engine pid's bytes or None, pids NVML lists)
    with open(events_path, "wb") as out, open(log_path, "wb") as err:
        engine = subprocess.Popen(
            [sys.executable, "-m", "engine", str(config)], stdout=out, stderr=err, cwd=REPO, env=dict(os.environ)
        )
    try:
        deadline = time.monotonic() + 480
        while engine.poll() is None and time.monotonic() < deadline:
            snapshot = telemetry.read()
            device = snapshot.devices[index]
            training = '"phase":"training"' in events_path.read_text()  # the engine's status event, compact JSON
            readings.append(
                (
                    training,
                    device.memory_used,
                    process_memory(snapshot, engine.pid),
                    sorted(p.pid for p in device.processes),
                )
            )
            time.sleep(0.2)
        if engine.poll() is None:
            engine.kill()
            engine.wait()
            pytest.fail("the engine did not finish 40 steps in 8 minutes")
        time.sleep(2.0)  # let the driver release the child's memory
        after = telemetry.read()
    finally:
        telemetry.close()
    events = [json.loads(line) for line in events_path.read_text().splitlines() if line.strip()]
    return {
        "pid": engine.pid,
        "returncode": engine.returncode,
        "events": events,
        "log_tail": log_path.read_text(errors="replace")[-3000:],
        "before": before.devices[index].memory_used,
        "after": after.devices[index].memory_used,
        "readings": readings,
        "driver": before.driver_version,
        "name": before.devices[index].name,
    }


def test_nvml_used_memory_rises_during_the_run_and_falls_after(engine_under_nvml):
    run = engine_under_nvml
    assert run["returncode"] == 0, f"the engine failed (exit {run['returncode']}):\n{run['log_tail']}"
    assert run["events"][-1]["type"] == "finished"
    during = [used for training, used, _, _ in run["readings"] if training and used is not None]
    assert during, f"no NVML reading was taken while the engine trained ({len(run['readings'])} readings in all)"
    before, peak, after = run["before"], max(during), run["after"]
    print(
        f"\n{run['name']}, driver {run['driver']}: used {before / GIB:.2f} GiB before, peak {peak / GIB:.2f} GiB "
        f"while training ({len(during)} readings), {after / GIB:.2f} GiB after"
    )
    # bf16 SD 1.5 weights alone are ~2.3 GB (UNet and text encoder in bf16, the VAE in float32).
    assert peak > before + 2 * GIB, f"used memory rose only from {before / GIB:.2f} to {peak / GIB:.2f} GiB"
    assert after < before + 1 * GIB, f"used memory stayed at {after / GIB:.2f} GiB after the engine exited"


def test_nvml_attributes_memory_to_the_engine_pid(engine_under_nvml):
    run = engine_under_nvml
    assert run["returncode"] == 0, f"the engine failed (exit {run['returncode']}):\n{run['log_tail']}"
    attributed = [memory for training, _, memory, _ in run["readings"] if training and memory is not None]
    if not attributed:
        listed = sorted({pid for *_, pids in run["readings"] for pid in pids})
        pytest.skip(
            f"NVML never listed the engine's pid {run['pid']} (it listed {listed or 'no processes'}): this "
            "test runs in a pid namespace (a container), where NVML reports host pids; "
            "process_memory() then returns None by design"
        )
    print(f"\nengine pid {run['pid']}: up to {max(attributed) / GIB:.2f} GiB attributed by NVML")
    assert max(attributed) > 2 * GIB, f"NVML attributed only {max(attributed) / GIB:.2f} GiB to the engine"
