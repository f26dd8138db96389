"""The run's settings, from the configuration the engine reports in ``run_started``: model,
network rank and alpha, learning rates, optimizer, scheduler, batch, resolution, precision."""

from __future__ import annotations

import os

from textual.content import Content

from loratui.core.terminal_text import escape_controls
from loratui.tui.dashboard import format as fmt
from loratui.tui.dashboard.view import Panel, View


def parameters(config: dict, mixed_precision: str | None, dataset: dict) -> list[tuple[str, str]]:
    """(label, value) pairs; settings the config does not have are left out."""
    section = lambda name: config.get(name) if isinstance(config.get(name), dict) else {}  # noqa: E731
    model, network, training = section("model"), section("network"), section("training")
    optimizer, data = section("optimizer"), section("dataset")
    pairs: list[tuple[str, str]] = []
    if model.get("path"):
        family = f" ({model['family']})" if model.get("family") else ""
        pairs.append(("model", os.path.basename(str(model["path"]).rstrip("/")) + family))
    if "rank" in network:
        alpha = f" / alpha {network['alpha']:g}" if isinstance(network.get("alpha"), (int, float)) else ""
        pairs.append(("network", f"rank {network['rank']}{alpha}"))
    if optimizer.get("name"):
        pairs.append(("optimizer", str(optimizer["name"])))
    rates = [
        f"unet {fmt.lr(optimizer['unet_lr'])}" if isinstance(optimizer.get("unet_lr"), (int, float)) else "",
        f"te {fmt.lr(optimizer['text_encoder_lr'])}"
        if isinstance(optimizer.get("text_encoder_lr"), (int, float))
        else "",
    ]
    if any(rates):
        pairs.append(("lr", " · ".join(rate for rate in rates if rate)))
    if optimizer.get("scheduler"):
        warmup = f", warmup {optimizer['warmup_steps']}" if optimizer.get("warmup_steps") else ""
        pairs.append(("scheduler", f"{optimizer['scheduler']}{warmup}"))
    if "batch_size" in training:
        accumulate = training.get("gradient_accumulation_steps", 1)
        extra = f" × {accumulate} accumulated" if isinstance(accumulate, int) and accumulate > 1 else ""
        pairs.append(("batch", f"{training['batch_size']}{extra}"))
    if "resolution" in data:
        pairs.append(("resolution", f"{data['resolution']}" + (" (buckets)" if data.get("enable_buckets") else "")))
    precision = mixed_precision or training.get("mixed_precision")
    if precision:
        pairs.append(("precision", str(precision)))
    if isinstance(dataset.get("images"), int):
        reg = f" + {dataset['reg_images']} reg" if dataset.get("reg_images") else ""
        pairs.append(("images", f"{dataset['images']}{reg}"))
    return pairs


class ParamsPanel(Panel):
    def build(self, view: View) -> Content:
        summary = view.summary
        pairs = parameters(summary.config, summary.mixed_precision, summary.dataset)
        if not pairs:
            return Content.styled("known once the engine has started", "$text-muted")
        # as many "label value" cells a line as fit
        cells = [
            Content.assemble((f"{label} ", "$text-muted"), (escape_controls(value), "bold")) for label, value in pairs
        ]
        width, lines, line = self.text_width, [], Content("")
        for cell in cells:
            candidate = cell if not line.plain else line + Content("  ") + cell
            if line.plain and candidate.cell_length > width:
                lines.append(line)
                line = cell
            else:
                line = candidate
        lines.append(line)
        return Content("\n").join(lines)
