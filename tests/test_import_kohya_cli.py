"""`loratui import-kohya JSON [DIR]`: a kohya_ss GUI config made into DIR/loratui.toml without a
terminal, as a user runs it (a real process), the report printed, and the written config ready for
`loratui check` once the project holds images and a model."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import tomli_w

from loratui import preflight
from loratui.shell import loratui_command

from .conftest import REPO, SAMPLE

FIXTURES = Path(__file__).parent / "fixtures" / "kohya"
TINY_MODELS = {"sd1": "loratui:tiny-sd", "sdxl": "loratui:tiny-sdxl", "flux": "loratui:tiny-flux"}
XFORMERS = preflight.installed("xformers")


def import_kohya(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    command = [sys.executable, "-m", "loratui.cli", "import-kohya", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


@pytest.fixture
def bf16_gpu(monkeypatch):
    """A machine with a bf16 GPU, as the files (mixed_precision bf16) are meant for."""
    monkeypatch.setattr(preflight, "this_machine", lambda: preflight.Machine("NVIDIA A100", (8, 0)))


def _section(report: str, title: str) -> list[str]:
    """The entry lines of one group of the printed report."""
    lines = report.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(title)]
    if not starts:
        return []
    section = []
    for line in lines[starts[0] + 1 :]:
        if not line.startswith("  "):
            break
        section.append(line.strip())
    return section


# What each fixture's report must say: the changed-on-the-way lines (beside xformers, which
# depends on this machine), and the keys it could not carry.
EXPECTED = {
    "SDXL-Standard-Adafactor.json": {
        "family": "sdxl",
        "changed": [
            'train_data_dir = "./test/img" -> dataset.image_dir = "img" (not a folder on this machine: '
            'this project\'s own ("img") instead)',
            'output_dir = "./test/output" -> output.output_dir = "model"',
            'logging_dir = "./test/logs" -> output.log_dir = "log"',
        ],
        "not_carried": [],
        "imported": ['sdxl = true -> model.family = "sdxl"', "noise_offset = 0.0357 -> training.noise_offset = 0.0357"],
    },
    "Standard-AdamW.json": {
        "family": "sd1",
        "changed": ['train_data_dir = "./test/img" -> dataset.image_dir = "img"'],
        "not_carried": [],
        "imported": [
            "multires_noise_iterations = 8 -> training.multires_noise_iterations = 8",
            "caption_dropout_rate = 0.05 -> dataset.caption_dropout_rate = 0.05",
            "bucket_no_upscale = true -> dataset.bucket_no_upscale = true",
        ],
    },
    "Standard-AdamW8bit.json": {
        "family": "sd1",
        "changed": [
            'caption_extension = "" -> dataset.caption_extension = loratui\'s default (empty: kohya then reads '
            ".caption files; loratui's default is .txt)"
        ],
        "not_carried": [],
        "imported": ['optimizer = "AdamW8bit" -> optimizer.name = "AdamW8bit"'],
    },
    "flux1D - adamw8bit fp8.json": {
        "family": "flux",
        "changed": ['train_data_dir = "put your image folder here" -> dataset.image_dir = "img"'],
        "not_carried": ["full_bf16 = true (not supported: full bf16 training"],
        "imported": ['LoRA_type = "Flux1" -> network.type = "lora" (networks.lora_flux)'],
    },
    "sd15 - EDG_LoraOptiSettings.json": {
        "family": "sd1",
        "changed": [
            'max_resolution = "512,650" -> dataset.resolution = 576 (512x650 is not square; 576 is the multiple '
            "of 64 with about the same area)"
        ],
        "not_carried": ["mem_eff_attn = true (kohya's own memory-efficient attention is not supported"],
        "imported": ["network_dim = 64 -> network.rank = 64"],
    },
}


@pytest.mark.parametrize("name", sorted(EXPECTED), ids=lambda name: Path(name).stem)
def test_each_gui_file_imports_and_passes_check_with_images_and_a_model(name, tmp_path: Path, bf16_gpu, capsys):
    from loratui import cli

    project = tmp_path / "my project"
    result = import_kohya(FIXTURES / name, project)
    assert result.returncode == 0, result.stderr
    report = result.stdout
    expected = EXPECTED[name]
    assert report.startswith(f"{name}: ")
    # The report, as the wizard shows it: its groups, the values that changed on the way, what was not carried.
    changed = _section(report, "Changed on the way")
    for line in expected["changed"]:
        assert any(entry.startswith(line) for entry in changed), (line, changed)
    # The file asks for xformers (all but the Flux one): where it is not installed, sdpa, said so.
    xformers = [entry for entry in changed if entry.startswith("xformers = ")]
    asks = expected["family"] != "flux"
    assert len(xformers) == (asks and not XFORMERS)
    assert all('-> training.attention = "sdpa" (xformers is not installed here' in line for line in xformers)
    not_carried = _section(report, "Not supported") + _section(report, "Unknown")
    assert len(not_carried) == len(expected["not_carried"]), not_carried
    for line in expected["not_carried"]:
        assert any(entry.startswith(line) for entry in not_carried), (line, not_carried)
    imported = _section(report, "Imported")
    for line in expected["imported"]:
        assert any(entry.startswith(line) for entry in imported), (line, imported)
    # The next command, quoted for the shell (the folder has a space).
    config = project / "loratui.toml"
    assert report.rstrip().endswith(f"Next: {loratui_command('check', config)}")
    assert "'" in loratui_command("check", config)
    # The project's folders, as `loratui new` makes them; the images go where the config points.
    assert all((project / folder).is_dir() for folder in ("img", "model", "log", "reg"))
    shutil.copytree(SAMPLE / "img", project / "img", dirs_exist_ok=True)
    data = tomllib.loads(config.read_text())
    assert data["model"]["family"] == expected["family"]
    assert (data["dataset"]["image_dir"], data["output"]["output_dir"], data["output"]["log_dir"]) == (
        "img",
        "model",
        "log",
    )
    # The model: the tiny one of the family (the file names a hub repo or a placeholder).
    data["model"]["path"] = TINY_MODELS[expected["family"]]
    if expected["family"] == "flux":
        data["model"].update(ae_path="", clip_l_path="", t5xxl_path="")  # a diffusers folder has them
    config.write_text(tomli_w.dumps(data))
    capsys.readouterr()
    assert cli.main(["check", str(config)]) == 0, capsys.readouterr().out
    assert "OK: ready to train." in capsys.readouterr().out


def test_keep_paths_writes_the_files_paths_as_they_are(tmp_path: Path):
    result = import_kohya(FIXTURES / "SDXL-Standard-Adafactor.json", tmp_path / "p", "--keep-paths")
    assert result.returncode == 0, result.stderr
    data = tomllib.loads((tmp_path / "p" / "loratui.toml").read_text())
    assert (data["dataset"]["image_dir"], data["output"]["output_dir"]) == ("./test/img", "./test/output")
    assert "Paths: every path is written as it is in the file" in result.stdout
    assert 'train_data_dir = "./test/img" -> dataset.image_dir = "./test/img"' in result.stdout


def test_a_folder_that_exists_is_kept(tmp_path: Path):
    (tmp_path / "p" / "test" / "img").mkdir(parents=True)
    result = import_kohya(FIXTURES / "Standard-AdamW.json", tmp_path / "p")
    data = tomllib.loads((tmp_path / "p" / "loratui.toml").read_text())
    assert data["dataset"]["image_dir"] == "./test/img"  # there, relative to the project: kept
    assert data["output"]["output_dir"] == "model"  # not there: the project's own
    assert "Paths: a folder of the file (train_data_dir" in result.stdout


def test_the_current_folder_is_the_default(tmp_path: Path):
    result = import_kohya(FIXTURES / "Standard-AdamW.json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "loratui.toml").is_file()
    assert f"Next: {loratui_command('check', tmp_path / 'loratui.toml')}" in result.stdout


def test_an_existing_config_is_kept_unless_forced(tmp_path: Path):
    config = tmp_path / "loratui.toml"
    config.write_text("# mine\n")
    refused = import_kohya(FIXTURES / "Standard-AdamW.json", tmp_path)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "loratui.toml is already there and was left as it is" in refused.stderr
    assert "--force" in refused.stderr
    assert config.read_text() == "# mine\n" and refused.stdout == ""
    forced = import_kohya(FIXTURES / "Standard-AdamW.json", tmp_path, "--force")
    assert forced.returncode == 0, forced.stderr
    assert tomllib.loads(config.read_text())["optimizer"]["name"] == "AdamW"


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "kohya_ss config not found"), ("{oops", "not valid JSON at line 1"), ("[]", "expected a JSON object")],
)
def test_a_missing_or_broken_json_is_one_plain_line_and_writes_nothing(tmp_path: Path, content, message):
    path = tmp_path / "kohya.json"
    if content is not None:
        path.write_text(content)
    result = import_kohya(path, tmp_path / "p")
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and message in result.stderr and str(path) in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not (tmp_path / "p").exists()


def test_additional_parameters_are_read_flag_by_flag(tmp_path: Path):
    path = tmp_path / "kohya.json"
    path.write_text(
        '{"LoRA_type": "Standard", "unet_lr": 1.0, "text_encoder_lr": 1.0, '
        '"additional_parameters": "--max_token_length 225 --network_train_unet_only --my_flag 3"}'
    )
    result = import_kohya(path, tmp_path / "p")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "additional_parameters: --max_token_length 225 -> dataset.max_token_length = 225" in out
    assert "additional_parameters: --network_train_unet_only -> network.train_unet_only = true" in out
    assert "additional_parameters: --my_flag 3 (not an sd-scripts option loratui has" in _section(out, "Unknown")[0]
    data = tomllib.loads((tmp_path / "p" / "loratui.toml").read_text())
    assert data["dataset"]["max_token_length"] == 225 and data["network"]["train_unet_only"] is True


def test_a_dataset_config_becomes_subsets_that_check_scans(tmp_path: Path, bf16_gpu, capsys):
    """The GUI's dataset_config: sd-scripts' dataset TOML, its subsets in place of train_data_dir."""
    from loratui import cli

    images = SAMPLE / "img" / "10_ohwx shape"
    (tmp_path / "dataset.toml").write_text(
        "[general]\nshuffle_caption = true\nkeep_tokens = 1\n\n[[datasets]]\nresolution = 128\nbatch_size = 2\nmin_bucket_reso = 64\n"
        "max_bucket_reso = 256\n\n"
        f'[[datasets.subsets]]\nimage_dir = {str(images)!r}\nnum_repeats = 3\nclass_tokens = "ohwx shape"\n'
        "color_aug = true\n"
    )
    (tmp_path / "kohya.json").write_text(
        '{"dataset_config": "dataset.toml", "train_data_dir": "/nowhere/img", "max_resolution": "512,512", '
        '"train_batch_size": 4, "network_dim": 8, "network_alpha": 8}'
    )
    result = import_kohya(tmp_path / "kohya.json", tmp_path / "p")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # Found beside the .json (the GUI read it from where kohya_ss ran); what it could not carry is named.
    assert 'dataset_config = "dataset.toml"' in out and "1 subset" in out and "color_aug" in out
    assert 'train_data_dir = "/nowhere/img" (dataset_config is set' in out
    config = tmp_path / "p" / "loratui.toml"
    data = tomllib.loads(config.read_text())
    assert data["dataset"]["image_dir"] == "" and data["dataset"]["resolution"] == 128  # the TOML's wins
    assert data["training"]["batch_size"] == 2 and data["dataset"]["shuffle_caption"] is True
    (subset,) = data["subsets"]
    assert (subset["image_dir"], subset["num_repeats"]) == (str(images), 3)
    data["model"]["path"] = "loratui:tiny-sd"
    config.write_text(tomli_w.dumps(data))
    capsys.readouterr()
    assert cli.main(["check", str(config)]) == 0, capsys.readouterr().out
