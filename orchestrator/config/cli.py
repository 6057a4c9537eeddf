"""From a command line to a resolved config, with every user error as one `key=value is not allowed` line.

Composition goes through Hydra's Compose API, not `@hydra.main`: the compose step only merges YAML and
typed schemas, it never instantiates `hydra.callbacks`, logging `()` factories or any `_target_`. On top
of that, recipes and task files are data: a selected recipe or task file that holds a `hydra` key, or a
`_target_` / `_partial_` / `_args_` / `()` key at any depth, is refused before Hydra reads it. Code a
user needs (their own task) comes from their own environment, never from a shared YAML file.

Hydra's and OmegaConf's own errors (an unknown key, a wrong type, a missing config group option, an
unparsable override) are reworded into our format, naming the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import yaml

from orchestrator.config.schema import CONF_DIR, broken_recipe, discover_recipes, register, root_schema, to_dict
from orchestrator.errors import ConfigError

CODE_KEYS = ("_target_", "_partial_", "_args_", "_recursive_", "_convert_", "()")
CONFIG_PATH_ENV = "ORCHESTRATOR_CONFIG_PATH"  # extra config folders (task/<name>.yaml ...), os.pathsep-separated
USAGE = """usage: python -m orchestrator +recipe=NAME [key=value ...]

  +recipe=NAME        a recipe from recipes/ or $ORCHESTRATOR_RECIPES
  task=NAME           a task config (conf/task/NAME.yaml; more folders: hydra.searchpath=[file:///dir]
                      or $ORCHESTRATOR_CONFIG_PATH)
  key=value           any config key, e.g. stages.prune.ratio=0.5 eval.repeats=300 dry_run=true
"""


def code_keys(node: Any, path: str = "") -> list[str]:
    """Dotted paths of every key in `node` that would make Hydra run code (`hydra` at the top, `_target_`...)."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{path}.{key}" if path else str(key)
            if key in CODE_KEYS or (not path and key == "hydra"):
                found.append(here)
            found.extend(code_keys(value, here))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.extend(code_keys(value, f"{path}[{i}]"))
    return found


def check_data_file(path: Path, what: str, key: str, value: str) -> None:
    """Refuse a recipe/task file that asks Hydra to run code (ConfigError naming the file and the key path)."""
    data = _read(path)  # an unreadable file is reported by composition itself
    bad = code_keys(data if isinstance(data, dict) else {})
    if bad:
        raise ConfigError(key, value, f"{what} {path} contains {bad[0]!r}: recipes and task files are data, "
                          "and keys that make Hydra run code (hydra, _target_, _partial_, _args_, ()) are refused")


def config_dirs(overrides: list[str]) -> list[Path]:
    """conf/, then folders from `hydra.searchpath=[...]` and $ORCHESTRATOR_CONFIG_PATH."""
    dirs = [CONF_DIR]
    for o in overrides:
        if o.lstrip("+").startswith("hydra.searchpath="):
            items = o.split("=", 1)[1].strip("[]")
            dirs += [Path(p.strip().strip("'\"").removeprefix("file://")) for p in items.split(",") if p.strip()]
    dirs += [Path(p) for p in os.environ.get(CONFIG_PATH_ENV, "").split(os.pathsep) if p]
    return dirs


def check_task_files(name: str, dirs: list[Path], seen: set[str] | None = None) -> None:
    """Scan the selected task file and the task files its defaults list pulls in."""
    seen = seen if seen is not None else set()
    if name in seen:
        return
    seen.add(name)
    for folder in dirs:
        path = folder / "task" / f"{name}.yaml"
        if path.is_file():
            check_data_file(path, "task file", "task", name)
            data = _read(path)
            for entry in (data.get("defaults") or []) if isinstance(data, dict) else []:
                if isinstance(entry, str) and entry != "_self_":
                    check_task_files(entry, dirs, seen)
            return


def parse_argv(argv: list[str]) -> tuple[str | None, list[str]]:
    """(recipe name, overrides) from the command line; ConfigError for anything that is not an override."""
    recipe, overrides = None, []
    for arg in argv:
        if arg.startswith("-") or "=" not in arg and not arg.startswith("~"):
            raise ConfigError("argument", arg, "give overrides as key=value (e.g. +recipe=pkdq "
                              "stages.prune.ratio=0.5); sweeps go in a recipe's sweep: block")
        key = arg.split("=", 1)[0].lstrip("+~")
        if key.startswith("hydra.") and key != "hydra.searchpath" or key == "hydra":
            raise ConfigError(key, arg.split("=", 1)[-1], "only hydra.searchpath may be set: "
                              "this tool does not run Hydra's job machinery (callbacks, logging, output dirs)")
        if key == "recipe":
            recipe = arg.split("=", 1)[1]
            continue
        overrides.append(arg)
    return recipe, overrides


def load(argv: list[str]) -> tuple[dict[str, Any], str | None, list[str]]:
    """The resolved config dict, the recipe name and the overrides; ConfigError for any bad input."""
    from orchestrator.config.plugins import PluginError

    recipe, overrides = parse_argv(argv)
    try:
        register()
    except PluginError as err:
        raise ConfigError("ORCHESTRATOR_PLUGINS", os.environ.get("ORCHESTRATOR_PLUGINS", ""), str(err)) from None
    if recipe is not None:
        problem = broken_recipe([f"+recipe={recipe}"])
        if problem:
            raise ConfigError("recipe", recipe, problem)
        recipes = discover_recipes()
        if recipe not in recipes:
            raise ConfigError("recipe", recipe, "must be one of " + ", ".join(sorted(recipes)))
        check_data_file(recipes[recipe], "recipe", "recipe", recipe)
    dirs = config_dirs(overrides)
    task = next((o.split("=", 1)[1] for o in overrides if o.lstrip("+").startswith("task=")), "digits")
    check_task_files(task, dirs)
    try:
        composed = compose([*([f"+recipe={recipe}"] if recipe else []), *_searchpath(overrides, dirs), *overrides])
    except ConfigError as err:
        if err.value is None and recipe is not None:  # a bad key written in the recipe: say where and what
            raise ConfigError(err.key, _dotted(_read(discover_recipes()[recipe]), err.key),
                              f"{err.allowed} (in recipe {recipe})") from None
        raise
    return composed, recipe, overrides


def _read(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def _dotted(data: Any, key: str) -> Any:
    """data['a']['b'] for 'a.b' (None where the path is missing)."""
    for part in key.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


def _searchpath(overrides: list[str], dirs: list[Path]) -> list[str]:
    """$ORCHESTRATOR_CONFIG_PATH folders as a hydra.searchpath override (unless one is given)."""
    if any(o.lstrip("+").startswith("hydra.searchpath=") for o in overrides) or len(dirs) == 1:
        return []
    return ["hydra.searchpath=[" + ",".join(f"file://{d.resolve()}" for d in dirs[1:]) + "]"]


def compose(overrides: list[str]) -> dict[str, Any]:
    """Hydra's Compose API over conf/ (no callbacks, no logging setup); errors become ConfigError."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = hydra_compose("config", overrides=overrides)
        return to_dict(cfg)
    except (HydraException, OmegaConfBaseException) as err:
        raise translate(err, overrides) from None
    finally:
        GlobalHydra.instance().clear()


def translate(err: BaseException, overrides: list[str]) -> ConfigError:
    """One of Hydra's or OmegaConf's errors as a ConfigError naming the key, the value and what is allowed."""
    from hydra.errors import MissingConfigException, OverrideParseException

    if isinstance(err, MissingConfigException) and err.missing_cfg_file:
        group, _, name = err.missing_cfg_file.rpartition("/")
        options = ", ".join(err.options or []) or "(none found)"
        return ConfigError(group or "config", name, f"must be one of {options}")
    if isinstance(err, OverrideParseException):
        first = str(err).splitlines()[0]
        return ConfigError("override", first.split("'")[1] if "'" in first else first,
                           "cannot be parsed: write key=value (quote values with spaces or brackets)")
    cause = _omegaconf_cause(err)
    if cause is None or not getattr(cause, "full_key", None):
        return ConfigError("config", None, str(err).splitlines()[0])
    key = cause.full_key
    msg = (cause.msg or "").splitlines()[0]
    if "not in" in msg:  # an unknown key: name the override as written, and the keys allowed where it went wrong
        written, value = _given(key, overrides)
        allowed = ", ".join(allowed_keys(key) or (_task_keys(overrides) if key.startswith("task.") else [])) \
            or "(none)"
        return ConfigError(written or key, value, f"unknown key {key.rsplit('.', 1)[-1]!r}"
                           f"{' under ' + key.rsplit('.', 1)[0] if '.' in key else ''}; allowed there: {allowed}")
    value = cause.value if cause.value is not None else _given(key, overrides)[1]
    return ConfigError(key, value, _type_hint(msg))


def _omegaconf_cause(err: BaseException) -> Any:
    from omegaconf.errors import OmegaConfBaseException

    seen = err
    while seen is not None:
        if isinstance(seen, OmegaConfBaseException) and getattr(seen, "full_key", None):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _given(key: str, overrides: list[str]) -> tuple[str | None, Any]:
    """(key as written, value) of the command-line override of `key` or of a key below it, if any."""
    for o in overrides:
        k, _, v = o.lstrip("+~").partition("=")
        if k == key or k.startswith(key + "."):
            return k, v
    return None, None


def _type_hint(msg: str) -> str:
    """'Value 'abc' of type 'str' could not be converted to Float' -> 'must be a float'."""
    for word, hint in (("Float", "a number"), ("Integer", "an integer"), ("Boolean", "true or false"),
                       ("String", "a string")):
        if f"converted to {word}" in msg:
            return f"must be {hint}"
    if "type hint 'typing.List" in msg or "to List" in msg:
        return "must be a list of values"
    if "type hint 'typing.Dict" in msg or "to Dict" in msg:
        return "must be a mapping"
    if msg.startswith("Missing mandatory value"):
        return "must be given a value ('???' marks a missing value)"
    if "is not a subclass of" in msg:
        return "must be a mapping of that section's keys"
    if "non-optional" in msg or "None" in msg:
        return "cannot be null"
    return msg


def _task_keys(overrides: list[str]) -> list[str]:
    """The keys of the selected task's config file (a task's schema is its own Params, not the root's)."""
    name = next((o.split("=", 1)[1] for o in overrides if o.lstrip("+").startswith("task=")), "digits")
    for folder in config_dirs(overrides):
        data = _read(folder / "task" / f"{name}.yaml")
        if isinstance(data, dict):
            data = data.get("task", data) if "task" in data else data
            return [k for k in data if k != "defaults"]
    return []


def allowed_keys(full_key: str) -> list[str]:
    """The keys the root schema allows beside `full_key` (its parent's fields)."""
    from orchestrator.stages import REGISTRY

    node: Any = root_schema(REGISTRY)
    for part in full_key.split(".")[:-1]:
        fields = {f.name: f for f in dataclasses.fields(node)} if dataclasses.is_dataclass(node) else {}
        if part not in fields:
            return []
        node = fields[part].type
        if isinstance(node, str) or not dataclasses.is_dataclass(node):
            return []
    return [f.name for f in dataclasses.fields(node)] if dataclasses.is_dataclass(node) else []
