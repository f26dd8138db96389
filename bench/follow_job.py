"""Re-attach and follow costs. Run: ``python bench/follow_job.py`` (``--quick`` for a smoke run).

1. **Re-attach**: the time to rebuild a dashboard's summary (``loratui.jobs.rebuild.rebuild``)
   from an ``events.jsonl`` of 1,000,000 events (950,000 steps, a memory event every 20 steps,
   an epoch end, eval and checkpoint every 10,000 steps: the shape the engine writes), three
   ways: from the engine's ``summary.json`` snapshot plus the 200 events written after it (what
   a job started by loratui has: the engine refreshes the snapshot every 10 s, i.e. every 200
   events at 20 events/s), by the fast fold of the whole file (no snapshot), and the baseline of
   decoding, validating and folding every line (``decode`` + ``RunSummary.apply``). Each side runs in a fresh subprocess so that its peak memory (max RSS)
   is its own; the figure is the median of ``--rounds`` runs, timed inside the subprocess after
   imports. Both must give the same step, loss minimum and checkpoint count (checked).
2. **Following**: the CPU a follower uses while a job writes 20 step events per second for
   ``--seconds``: a writer subprocess appends engine-shaped lines; the follower subprocess runs
   ``follow()`` + ``RunSummary.apply`` (what ``loratui attach`` and the dashboard do) and reports
   its CPU time (``time.process_time``, after imports) over the wall time. The baseline is
   ``tail -f`` on the same kind of stream, measured the same way (its CPU from ``wait4``).

Exit status is always 0: a measurement, not a test. Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
T0 = 1_795_000_000.0


def step_line(step: int, t: float, epoch: int) -> str:
    # The engine's own layout (loratui.core.protocol.make_event + encode): compact, fields in this order.
    return (
        json.dumps(
            {
                "v": 1,
                "type": "step",
                "t": round(t, 3),
                "step": step,
                "epoch": epoch,
                "loss": 1 / (1 + step * 1e-4) + (step * 7919 % 1000) / 1e4,
                "loss_avg": 0.5,
                "lr": {"unet": 0.0001, "text_encoder": 5e-05},
                "s_per_step": 0.05,
                "samples_per_s": 80.0,
                "elapsed_s": round(step * 0.05, 3),
            },
            separators=(",", ":"),
        )
        + "\n"
    )


def write_log(path: Path, events: int) -> int:
    steps = int(events / (1 + 1 / 20 + 3 / 10_000))
    per_epoch = 10_000
    with open(path, "w") as out:
        out.write(
            json.dumps(
                {
                    "v": 1,
                    "type": "run_started",
                    "t": T0,
                    "run_id": "bench",
                    "config": {},
                    "dataset": {},
                    "total_steps": steps,
                    "total_epochs": -(-steps // per_epoch),
                    "steps_per_epoch": per_epoch,
                    "start_step": 0,
                    "start_epoch": 0,
                    "device": "cuda",
                    "device_name": "bench",
                    "mixed_precision": "bf16",
                    "pid": 1,
                    "resumed_from": None,
                    "elapsed_s": 0.0,
                    "loss_history": [],
                },
                separators=(",", ":"),
            )
            + "\n"
        )
        written = 1
        for step in range(1, steps + 1):
            t = T0 + step * 0.05
            epoch = (step - 1) // per_epoch + 1
            out.write(step_line(step, t, epoch))
            written += 1
            if step % 20 == 0:
                out.write(
                    json.dumps(
                        {
                            "v": 1,
                            "type": "memory",
                            "t": t,
                            "device": "cuda",
                            "allocated": step,
                            "reserved": step,
                            "peak_allocated": step,
                            "total": 1 << 36,
                        },
                        separators=(",", ":"),
                    )
                    + "\n"
                )
                written += 1
            if step % per_epoch == 0:
                for event in (
                    {"type": "epoch_end", "epoch": epoch, "step": step, "loss_avg": 0.4, "elapsed_s": step * 0.05},
                    {"type": "eval", "step": step, "epoch": epoch, "loss": 0.3},
                    {
                        "type": "checkpoint",
                        "path": f"/m/x-{epoch:06d}.safetensors",
                        "bytes": 1,
                        "epoch": epoch,
                        "step": step,
                        "kind": "epoch",
                    },
                ):
                    out.write(json.dumps({"v": 1, "t": t, **event}, separators=(",", ":")) + "\n")
                    written += 1
    return written


REBUILD_CHILD = """
import json, resource, sys, time
from pathlib import Path
from loratui.jobs.rebuild import rebuild
from loratui.core.summary import RunSummary
path, mode = Path(sys.argv[1]), sys.argv[2]
start = time.perf_counter()
if mode == "snapshot":
    summary, _ = rebuild(path)
elif mode == "fast":
    summary, _ = rebuild(path, use_snapshot=False)
else:
    from loratui.core.protocol import decode
    summary = RunSummary()
    with open(path, "rb") as handle:  # line by line, as EventFileReader decodes: bounded memory
        for line in handle:
            summary.apply(decode(line.decode("utf-8")))
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "step": summary.step, "min": summary.loss_min, "checkpoints": len(summary.checkpoints),
                  "points": len(summary.history.points())}))
"""

FOLLOW_CHILD = """
import json, sys, time
from pathlib import Path
from loratui.jobs.follow import follow
from loratui.core.summary import RunSummary
path, deadline = Path(sys.argv[1]), float(sys.argv[2])
summary = RunSummary()
cpu0, wall0 = time.process_time(), time.monotonic()
for event in follow(path, lambda: time.time() < deadline):
    summary.apply(event)
print(json.dumps({"cpu_s": time.process_time() - cpu0, "wall_s": time.monotonic() - wall0, "step": summary.step}))
"""

WRITER_CHILD = """
import sys, time
sys.path.insert(0, sys.argv[4])
from follow_job import step_line
path, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
with open(path, "a") as out:
    start = time.monotonic()
    step = 0
    while time.monotonic() - start < seconds:
        step += 1
        out.write(step_line(step, time.time(), 1)); out.flush()
        time.sleep(max(0.0, start + step / rate - time.monotonic()))
"""


def run_child(code: str, *args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def write_engine_snapshot(path: Path, events_after: int) -> None:
    """The summary.json the engine would have written ``events_after`` events before the end."""
    sys.path.insert(0, str(REPO))
    from loratui.core.snapshot import SNAPSHOT_FILE, write_snapshot
    from loratui.jobs.rebuild import rebuild

    data = path.read_bytes()
    offset = len(data)
    for _ in range(events_after):
        offset = data.rindex(b"\n", 0, offset - 1) + 1
    partial = path.with_name("partial.jsonl")
    partial.write_bytes(data[:offset])
    summary, covered = rebuild(partial, use_snapshot=False)
    partial.unlink()
    assert covered == offset
    write_snapshot(path.with_name(SNAPSHOT_FILE), summary, offset)


def bench_rebuild(folder: Path, events: int, rounds: int) -> None:
    path = folder / "events.jsonl"
    started = time.perf_counter()
    written = write_log(path, events)
    # In a child: this bench process must stay small, since its children's peak RSS starts at its size.
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.path.insert(0, sys.argv[2]); import follow_job; "
            "follow_job.write_engine_snapshot(follow_job.Path(sys.argv[1]), 200)",
            str(path),
            str(Path(__file__).parent),
        ],
        check=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    print(
        f"log: {written:,} events, {path.stat().st_size / 1e6:.0f} MB (written in {time.perf_counter() - started:.0f} s)"
    )
    names = {"snapshot": "snapshot + 200 events", "fast": "fast fold, no snapshot", "slow": "every line (baseline)"}
    results: dict[str, list[dict]] = {mode: [] for mode in names}
    for _ in range(rounds):
        for mode in names:
            results[mode].append(run_child(REBUILD_CHILD, str(path), mode))
    for mode, runs in results.items():
        times = [r["seconds"] for r in runs]
        print(
            f"  {names[mode]:<23}: median {statistics.median(times):7.3f} s  (runs: "
            f"{', '.join(f'{t:.3f}' for t in times)}), peak RSS {max(r['max_rss_mb'] for r in runs):.0f} MB"
        )
    keys = [(r["step"], r["min"], r["checkpoints"]) for runs in results.values() for r in runs]
    baseline = statistics.median(r["seconds"] for r in results["slow"])
    print(
        f"  same summary (step, loss min, checkpoints) every way: {len(set(keys)) == 1}; "
        f"{results['fast'][0]['points']} points kept for the loss curve"
    )
    for mode in ("snapshot", "fast"):
        ratio = baseline / statistics.median(r["seconds"] for r in results[mode])
        print(f"  {names[mode]} is {ratio:,.0f}x as fast as the baseline")


def bench_follow(folder: Path, seconds: float, rate: float) -> None:
    path = folder / "live.jsonl"
    path.write_text("")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    deadline = time.time() + seconds + 1.0
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER_CHILD, str(path), str(rate), str(seconds), str(Path(__file__).parent)], env=env
    )
    follower = run_child(FOLLOW_CHILD, str(path), str(deadline))
    writer.wait()
    print(
        f"  follower (follow + RunSummary): {follower['cpu_s']:.3f} s CPU over {follower['wall_s']:.1f} s "
        f"= {100 * follower['cpu_s'] / follower['wall_s']:.2f} % of one core, {follower['step']} steps seen"
    )

    path.write_text("")
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER_CHILD, str(path), str(rate), str(seconds), str(Path(__file__).parent)], env=env
    )
    tail = subprocess.Popen(["tail", "-f", str(path)], stdout=subprocess.DEVNULL)
    started = time.monotonic()
    writer.wait()
    time.sleep(0.5)
    tail.terminate()
    _, _, usage = os.wait4(tail.pid, 0)
    wall = time.monotonic() - started
    cpu = usage.ru_utime + usage.ru_stime
    print(f"  baseline (tail -f):             {cpu:.3f} s CPU over {wall:.1f} s = {100 * cpu / wall:.2f} % of one core")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=30.0, help="how long the live job writes")
    parser.add_argument("--rate", type=float, default=20.0, help="events per second while following")
    parser.add_argument("--quick", action="store_true", help="100,000 events, 1 round, 5 s of following")
    args = parser.parse_args()
    if args.quick:
        args.events, args.rounds, args.seconds = 100_000, 1, 5.0
    print(
        f"loratui follow benchmark on {os.cpu_count()} CPU(s), Python {sys.version.split()[0]}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        print("1. Re-attach: rebuild the summary of a finished run")
        bench_rebuild(Path(tmp), args.events, args.rounds)
        print(f"2. Follow a live job writing {args.rate:.0f} events/s for {args.seconds:.0f} s")
        bench_follow(Path(tmp), args.seconds, args.rate)


if __name__ == "__main__":
    main()
