"""The settings of one training run, stored as a TOML file: the config model, loading and saving.

The settings themselves are declared in :mod:`loratui.params` (type, default, range, help, kohya
names, metadata); ``docs/config.md`` lists them all. Here they become one dataclass per TOML
section, generated from those declarations, and :class:`RunConfig` holds the six sections.

Relative paths are resolved against the folder of the TOML file (``RunConfig.base_dir``), so a
project folder can be moved or shared as a whole.

Loading checks types and names only, and reports every such mistake at once (``load_config``);
:func:`loratui.validation.validate` then checks ranges, choices and the rules across settings.
This module never imports torch or any other part of the training engine.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from loratui.atomic import write_text_atomic
from loratui.core.run_files import UnsafeRunFile, read_named_file
from loratui.errors import Problem, UserError
from loratui.optimizer_args import canonical_optimizer
from loratui.params import BUILTIN_PREFIX, SECTIONS, Setting, kohya_cli_names, settings_of
from loratui.subset_options import OPTION_NAMES, SubsetOptions

# ---------------------------------------------------------------------------------------------
# The config model, generated from the declarations.


def _section_class(section: str, class_name: str, namespace: dict | None = None) -> type:
    fields = []
    for setting in settings_of(section):
        annotation = list[str] if setting.type is list else setting.type
        if isinstance(setting.default, list):
            default = field(default_factory=lambda value=setting.default: list(value))
        else:
            default = field(default=setting.default)
        fields.append((setting.key, annotation, default))
    doc = f"[{section}]: {SECTIONS[section]} (declared in loratui.params)."
    cls = dataclasses.make_dataclass(class_name, fields, namespace={"__doc__": doc, **(namespace or {})})
    cls.__module__ = __name__
    return cls


def _is_builtin(self) -> bool:
    """True for a model shipped with loratui, which is named rather than stored at a path."""
    return self.path.startswith(BUILTIN_PREFIX)


ModelSettings = _section_class("model", "ModelSettings", {"is_builtin": property(_is_builtin)})
DatasetSettings = _section_class("dataset", "DatasetSettings")
NetworkSettings = _section_class("network", "NetworkSettings")
TrainingSettings = _section_class("training", "TrainingSettings")
OptimizerSettings = _section_class("optimizer", "OptimizerSettings")
OutputSettings = _section_class("output", "OutputSettings")
SampleSettings = _section_class("sample", "SampleSettings")

# The TOML section names, in file order, and the dataclass each one is read into.
SECTION_CLASSES: dict[str, type] = {
    "model": ModelSettings,
    "dataset": DatasetSettings,
    "network": NetworkSettings,
    "training": TrainingSettings,
    "optimizer": OptimizerSettings,
    "output": OutputSettings,
    "sample": SampleSettings,
}
assert tuple(SECTION_CLASSES) == tuple(SECTIONS)


@dataclass
class SubsetSettings:
    """One ``[[subsets]]`` table: a folder of images (scanned flat, captions beside them) trained as
    one concept with its own repeats, class tokens, regularisation flag and caption options
    (sd-scripts' dataset config subsets). Options not given follow the [dataset] section's."""

    image_dir: str
    num_repeats: int = 1
    class_tokens: str = ""  # the caption of an image without a caption file
    is_reg: bool = False
    caption_extension: str = ""  # "" = the [dataset] section's
    options: dict[str, object] = field(default_factory=dict)  # SubsetOptions names given in the table

    def to_toml(self) -> dict[str, object]:
        """The table as written: what was given, nothing that follows the [dataset] section."""
        table: dict[str, object] = {"image_dir": self.image_dir, "num_repeats": self.num_repeats}
        if self.class_tokens:
            table["class_tokens"] = self.class_tokens
        if self.is_reg:
            table["is_reg"] = True
        if self.caption_extension:
            table["caption_extension"] = self.caption_extension
        return {**table, **self.options}


# The keys of a [[subsets]] table and their types (SubsetOptions' own for its names).
SUBSET_KEYS: dict[str, type] = {
    "image_dir": str,
    "num_repeats": int,
    "class_tokens": str,
    "is_reg": bool,
    "caption_extension": str,
    **{name: type(getattr(SubsetOptions(), name)) for name in OPTION_NAMES},
}


@dataclass
class RunConfig:
    """Everything one training run needs, one attribute per TOML section."""

    model: ModelSettings = field(default_factory=ModelSettings)  # type: ignore[valid-type]
    dataset: DatasetSettings = field(default_factory=DatasetSettings)  # type: ignore[valid-type]
    network: NetworkSettings = field(default_factory=NetworkSettings)  # type: ignore[valid-type]
    training: TrainingSettings = field(default_factory=TrainingSettings)  # type: ignore[valid-type]
    optimizer: OptimizerSettings = field(default_factory=OptimizerSettings)  # type: ignore[valid-type]
    output: OutputSettings = field(default_factory=OutputSettings)  # type: ignore[valid-type]
    sample: SampleSettings = field(default_factory=SampleSettings)  # type: ignore[valid-type]
    # The [[subsets]] tables (sd-scripts' dataset config subsets), each scanned as one concept.
    subsets: list[SubsetSettings] = field(default_factory=list)
    # Folder of the TOML file; relative paths resolve against it. It is not saved, and equality
    # ignores it: two configs with the same settings are equal wherever their files live.
    base_dir: Path = field(default_factory=Path.cwd, compare=False)

    def resolve(self, path_str: str) -> Path:
        """The path a config field points at: ``~`` expanded, relative paths joined to base_dir.

        Empty fields mean "none" and built-in model names are no paths, so resolving either
        raises ValueError instead of silently pointing at base_dir or a made-up file.
        """
        if not path_str.strip():
            raise ValueError("an empty path field means 'none'; check it before resolving")
        if path_str.startswith(BUILTIN_PREFIX):
            raise ValueError(f"{path_str!r} names a built-in model, not a path")
        path = Path(path_str).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    def get(self, name: str) -> object:
        """The value of a setting by its name, ``"network.rank"``."""
        section, _, key = name.partition(".")
        return getattr(getattr(self, section), key)

    def set(self, name: str, value: object) -> None:
        section, _, key = name.partition(".")
        setattr(getattr(self, section), key, value)


# sd-scripts names that users bring along -> the setting here; only used to turn "unknown key"
# into "this is called X here".
KOHYA_NAMES: dict[str, tuple[str, str]] = {
    name: (setting.section, setting.key) for name, setting in kohya_cli_names().items() if name != setting.key
}


# ---------------------------------------------------------------------------------------------
# Loading: TOML text -> dict -> RunConfig, with every type and name mistake reported at once.


def load_config(path: str | Path) -> RunConfig:
    """Read a run config from a TOML file; raise UserError naming the file for any mistake."""
    path = Path(path).expanduser()
    where = str(path)
    data = _parse_toml(_read_text(path, where), where)
    return _build_config(data, path.parent.absolute(), where)


def config_from_dict(data: dict, base_dir: Path | None = None) -> RunConfig:
    """Build a RunConfig from parsed TOML; the same checks as load_config, minus the file."""
    return _build_config(data, Path(base_dir).absolute() if base_dir is not None else Path.cwd(), "")


CONFIG_BYTES = 1024 * 1024  # a config is a few KB: a larger file is not one


def _read_text(path: Path, where: str) -> str:
    if path.is_dir():
        raise UserError("this is a folder, not a config file", where, "give the path of the .toml file")
    try:
        # only a regular file, and only so much of it: a FIFO would hang, /dev/zero fill memory
        raw = read_named_file(path, CONFIG_BYTES)
    except UnsafeRunFile as err:
        raise UserError(f"not a config file: it {err.strerror}", where, "give the path of the .toml file") from err
    except FileNotFoundError as err:
        fix = f"check the path; a relative path starts in the current folder ({Path.cwd()})"
        raise UserError("config file not found", where, fix) from err
    except OSError as err:
        message = f"cannot read the config file: {err.strerror or err}"
        raise UserError(message, where, "check that the file exists and you may read it") from err
    try:
        # utf-8-sig drops the byte-order mark some Windows editors put at the start.
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        message = f"the file is not UTF-8 text (unreadable byte at position {err.start})"
        raise UserError(message, where, "save the file as UTF-8 in your editor") from err


# tomllib ends its messages with "(at line 3, column 8)" or "(at end of document)".
_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_TOML_AT_END = re.compile(r"\s*\(at end of document\)\s*$")


def _parse_toml(text: str, where: str) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise _toml_syntax_error(str(err), where) from err
    except (RecursionError, ValueError) as err:
        # tomllib recurses once per nested array or inline table, and Python refuses to read
        # integers of over 4,300 digits: neither is a loratui config.
        message = "not a loratui config: values nested too deep or a number too long to read"
        raise UserError(message, where, "write the config with `loratui new` or fix the value by hand") from err


def _toml_syntax_error(detail: str, where: str) -> UserError:
    """Reword tomllib's message so the position comes first, in plain words."""
    hint = (
        'text needs quotes (name = "mylora"), true/false are lowercase, '
        'lists use brackets (args = ["a=1", "b=2"]) and a key may appear only once per section'
    )
    position = _TOML_POSITION.search(detail)
    if position:
        line, column = position.groups()
        reason = _lower_first(detail[: position.start()])
        message = f"not valid TOML at line {line}, column {column}: {reason}"
        return UserError(message, where, f"correct line {line}: {hint}")
    at_end = _TOML_AT_END.search(detail)
    reason = _lower_first(detail[: at_end.start()] if at_end else detail)
    message = f"not valid TOML at the end of the file: {reason}"
    return UserError(message, where, f"check the last lines: {hint}")


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _build_config(data: dict, base_dir: Path, where: str) -> RunConfig:
    subsets, subset_problems = _read_subsets(data.get("subsets", []))
    values, problems = _read_sections({name: table for name, table in data.items() if name != "subsets"})
    problems += subset_problems
    if problems:
        raise _load_error(problems, where)
    sections = {name: cls(**values.get(name, {})) for name, cls in SECTION_CLASSES.items()}
    cfg = RunConfig(**sections, subsets=subsets, base_dir=base_dir)
    # Optimizer names are matched case-insensitively and stored as spelled in the docs, so the
    # engine compares exact names. Unknown names stay as written for validate() to report.
    cfg.optimizer.name = canonical_optimizer(cfg.optimizer.name) or cfg.optimizer.name
    return cfg


def _load_error(problems: list[Problem], where: str) -> UserError:
    """One UserError for all problems, so the user fixes the file in one go."""
    if len(problems) == 1:
        only = problems[0]
        return UserError(f"{only.where}: {only.message}", where, only.fix, "config")
    lines = "\n".join(f"  {problem}" for problem in problems)
    message = f"{len(problems)} problems in the config:\n{lines}"
    return UserError(message, where, "", "config", escaped_lines=True)  # each line a rendered Problem


def _read_sections(data: dict) -> tuple[dict[str, dict[str, object]], list[Problem]]:
    """Checked values per section, plus a problem for everything that could not be used."""
    values: dict[str, dict[str, object]] = {}
    problems: list[Problem] = []
    for name, table in data.items():
        if name not in SECTION_CLASSES:
            problems.append(_stray_entry_problem(name, table))
        elif not isinstance(table, dict):
            message = f"[{name}] must be a section, got {_describe(table)}"
            problems.append(Problem(name, message, f"write a [{name}] header followed by its keys"))
        else:
            values[name], section_problems = _read_section(name, table)
            problems.extend(section_problems)
    return values, problems


def _read_subsets(tables: object) -> tuple[list[SubsetSettings], list[Problem]]:
    """The [[subsets]] tables, with a problem for each key of the wrong type or name."""
    if not isinstance(tables, list) or not all(isinstance(table, dict) for table in tables):
        message = f"subsets must be [[subsets]] tables, got {_describe(tables)}"
        return [], [Problem("subsets", message, 'write each subset as a [[subsets]] header, then image_dir = "..."')]
    subsets, problems = [], []
    for number, table in enumerate(tables, start=1):
        where = f"subsets[{number}]"
        accepted: dict[str, object] = {}
        for key, value in table.items():
            expected = SUBSET_KEYS.get(key)
            if expected is None:
                problems.append(_unknown_subset_key(where, key))
            elif not _has_type(value, expected):
                default = getattr(SubsetOptions(), key, 1 if expected is int else "")
                problem = _type_problem("subsets", key, value, expected, default)
                problems.append(Problem(f"{where}.{key}", problem.message, problem.fix))
            else:
                accepted[key] = _normalised(value, expected)
        if "image_dir" not in accepted:
            if "image_dir" not in table:
                fix = 'add image_dir = "path/to/folder" (a folder of images and their captions)'
                problems.append(Problem(where, "this [[subsets]] table has no image_dir", fix))
            continue
        plain = {key: accepted.pop(key) for key in list(accepted) if key not in OPTION_NAMES}
        subsets.append(SubsetSettings(**plain, options=accepted))  # type: ignore[arg-type]
    return subsets, problems


def _unknown_subset_key(where: str, key: str) -> Problem:
    close = difflib.get_close_matches(key, SUBSET_KEYS, n=1)
    if close:
        message = f"unknown key '{key}' in [[subsets]]; did you mean '{close[0]}'?"
        return Problem(f"{where}.{key}", message, f"rename it to {close[0]}")
    fix = f"remove it; the keys of a [[subsets]] table are {', '.join(SUBSET_KEYS)}"
    return Problem(f"{where}.{key}", f"unknown key '{key}' in [[subsets]]", fix)


def _read_section(section: str, table: dict) -> tuple[dict[str, object], list[Problem]]:
    declared: dict[str, Setting] = {setting.key: setting for setting in settings_of(section)}
    accepted: dict[str, object] = {}
    problems: list[Problem] = []
    for key, value in table.items():
        setting = declared.get(key)
        if setting is None:
            problems.append(_unknown_key_problem(section, key))
            continue
        expected = list[str] if setting.type is list else setting.type
        if not _has_type(value, expected):
            problems.append(_type_problem(section, key, value, expected, setting.default))
        else:
            accepted[key] = _normalised(value, expected)
    return accepted, problems


def _has_type(value: object, expected: object) -> bool:
    # bool is a subclass of int in Python, but "rank = true" is a mistake, never a number.
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return is_number and math.isfinite(value)
    if expected is str:
        return isinstance(value, str)
    if expected == list[str]:
        return isinstance(value, list) and all(isinstance(item, str) for item in value)
    raise TypeError(f"config field type {expected!r} has no check")  # a bug in this module


def _normalised(value: object, expected: object) -> object:
    # "alpha = 16" is a fine float; store 16.0 so the value has the declared type.
    if expected is float:
        return float(value)  # type: ignore[arg-type]
    if expected == list[str]:
        return list(value)  # type: ignore[call-overload]
    return value


# ---------------------------------------------------------------------------------------------
# Messages for load problems.

_EXPECTED_TEXT: dict[object, str] = {
    bool: "true or false",
    int: "a whole number",
    float: "a number",
    str: "text in quotes",
    list[str]: 'a list of quoted strings (["a", "b"])',
}


def _type_problem(section: str, key: str, value: object, expected: object, default: object) -> Problem:
    message = f"expected {_EXPECTED_TEXT[expected]}, got {_describe(value)}"
    meant = _probably_meant(value, expected)
    if meant is _NO_GUESS:
        fix = f"write a value like the default: {_toml_line(key, default)}"
    elif isinstance(value, str) and expected != list[str]:
        fix = f"write {_toml_line(key, meant)}, without quotes"
    else:
        fix = f"write {_toml_line(key, meant)}"
    return Problem(f"{section}.{key}", message, fix)


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"the whole number {value}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return f"{value!r}, which is not a finite number"
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the text {value!r}"
    if isinstance(value, list):
        others = [item for item in value if not isinstance(item, str)]
        return f"a list containing {_describe(others[0])}" if others else "a list"
    if isinstance(value, dict):
        return "a table"
    return f"a TOML {type(value).__name__}"  # dates and times


_NO_GUESS = object()
_INTEGER = re.compile(r"[+-]?\d+")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _probably_meant(value: object, expected: object) -> object:
    """The value the user most likely meant to write, or _NO_GUESS when there is no safe guess."""
    if isinstance(value, str) and expected in (bool, int, float):
        return _parse_scalar(value.strip(), expected)
    if expected is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if expected is bool and type(value) is int and value in (0, 1):
        return bool(value)
    if expected is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if expected == list[str] and isinstance(value, str):
        return value.split()  # kohya's command line separates optimizer_args with spaces
    if expected == list[str] and isinstance(value, list):
        return [str(item) for item in value]
    return _NO_GUESS


def _parse_scalar(text: str, expected: object) -> object:
    if expected is bool and text.lower() in ("true", "false"):
        return text.lower() == "true"
    if expected is int and _INTEGER.fullmatch(text):
        return int(text)
    if expected is float and _NUMBER.fullmatch(text):
        return float(text)
    return _NO_GUESS


def _toml_line(key: str, value: object) -> str:
    """``key = value`` on one line, for messages (tomli_w spreads lists over several lines)."""
    if isinstance(value, list):
        items = ", ".join(_toml_value(item) for item in value)
        return f"{_toml_key(key)} = [{items}]"
    return f"{_toml_key(key)} = {_toml_value(value)}"


def _toml_value(value: object) -> str:
    return tomli_w.dumps({"v": value}).partition("=")[2].strip()


def _toml_key(key: str) -> str:
    return tomli_w.dumps({key: 0}).rpartition("=")[0].strip()


def _stray_entry_problem(name: str, value: object) -> Problem:
    """A top-level entry that is not one of the sections: a misspelt section or a loose key."""
    if isinstance(value, dict):
        close = difflib.get_close_matches(name, SECTIONS, n=1)
        if close:
            message = f"unknown section [{name}]; did you mean [{close[0]}]?"
            return Problem(name, message, f"rename the header to [{close[0]}]")
        fix = f"remove it; the sections are {_section_list()}"
        return Problem(name, f"unknown section [{name}]", fix)
    home = _home_of(name)
    if home:
        section, key = home
        fix = f"move it under [{section}]" if key == name else f"write it as {key} under [{section}]"
        return Problem(name, f"'{name}' is outside any section", fix)
    fix = f"remove it; settings go in {_section_list()}"
    return Problem(name, f"unknown key '{name}' outside any section", fix)


def _unknown_key_problem(section: str, key: str) -> Problem:
    where = f"{section}.{key}"
    keys = [setting.key for setting in settings_of(section)]
    home = _home_of(key)
    if home and home[1] == key:
        message = f"key '{key}' belongs in [{home[0]}], not [{section}]"
        return Problem(where, message, f"move it under [{home[0]}]")
    if home:
        message = f"unknown key '{key}' in [{section}]; kohya's {key} is called '{home[1]}' here"
        if home[0] == section:
            fix = f"rename it to {home[1]}"
        else:
            fix = f"write it as {home[1]} under [{home[0]}]"
        return Problem(where, message, fix)
    close = difflib.get_close_matches(key, keys, n=1)
    if close:
        message = f"unknown key '{key}' in [{section}]; did you mean '{close[0]}'?"
        return Problem(where, message, f"rename it to {close[0]}")
    fix = f"remove it; the keys of [{section}] are {', '.join(keys)}"
    return Problem(where, f"unknown key '{key}' in [{section}]", fix)


def _home_of(key: str) -> tuple[str, str] | None:
    """(section, key) where a key from another section, or a kohya name, belongs."""
    for section in SECTIONS:
        if any(setting.key == key for setting in settings_of(section)):
            return section, key
    return KOHYA_NAMES.get(key)


def _section_list() -> str:
    return ", ".join(f"[{name}]" for name in SECTIONS)


# ---------------------------------------------------------------------------------------------
# Saving.


def config_to_dict(cfg: RunConfig) -> dict:
    """The TOML-ready sections of cfg (base_dir is not part of the file)."""
    return {name: dataclasses.asdict(getattr(cfg, name)) for name in SECTION_CLASSES}


def to_toml(cfg: RunConfig) -> str:
    header = "# loratui run config. Relative paths are resolved against the folder of this file.\n\n"
    # The [[subsets]] tables after the sections, one header each (tomli_w would write them inline).
    subsets = "".join("\n[[subsets]]\n" + tomli_w.dumps(subset.to_toml()) for subset in cfg.subsets)
    return header + tomli_w.dumps(config_to_dict(cfg)) + subsets


def save_config(cfg: RunConfig, path: str | Path) -> None:
    """Write cfg to path atomically: readers see the old file or the new one, never a mix.

    Relative paths are written as they are, so they resolve against the new file's folder.
    """
    path = Path(path).expanduser()
    try:
        write_text_atomic(path, to_toml(cfg))
    except OSError as err:
        message = f"cannot write the config file: {err.strerror or err}"
        fix = "check that the folder exists and you may write to it"
        raise UserError(message, str(path), fix) from err
