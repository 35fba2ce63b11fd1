"""Read config.json, check every key against a schema, apply command-line overrides and build
objects by name (`"type"` + `"args"`), as in pytorch-template, with three changes:

* an unknown key, a missing key or a value of the wrong type is a `ConfigError` naming the key
  (nanoGPT-style), and the `args` of every `"type"` section are checked against the signature of
  the class or function they name;
* parsing creates no folders: `ConfigParser.make_run_dir()` does, when training starts;
* the run folder is one place, `<save_dir>/<name>/<run_id>/`, holding the config copy, checkpoints,
  `info.log`, TensorBoard events and the report.
"""

import argparse
import copy
import inspect
import itertools
import json
import os
import re
import types
import typing
from datetime import datetime
from pathlib import Path

from utils.errors import CheckpointError, ConfigError

REQUIRED = object()  # marks a key without a default
OBJECT = "object"  # marks a {"type": name, "args": {...}} section

TRAINER_SCHEMA = {
    "epochs": (int, REQUIRED),
    "save_dir": (str, "saved/"),
    "save_period": (int, 10),
    "verbosity": (int, 2),
    "monitor": (str, "max val_accuracy"),
    "early_stop": (int, 0),
    "tensorboard": (bool, True),
    "amp": (("auto", "off", "bf16", "fp16"), "auto"),
    "channels_last": (bool, False),
    "report": (bool, True),
    "sync_bn": (bool, False),
    "dist_timeout": (int, 600),
}

CONSTRAINTS_SCHEMA = {
    "max_params": (int, 100_000),
    "min_receptive_field": (int, 53),
    "min_depthwise_separable": (int, 2),
    "min_dilated": (int, 1),
    "require_gap": (bool, True),
    "forbid_maxpool": (bool, True),
    "required_augmentations": (list, ["HorizontalFlip", "ShiftScaleRotate|Affine", "CoarseDropout", "ToGray"]),
    "enforce": (bool, True),
}

SCHEMA = {
    "name": (str, REQUIRED),
    "seed": (int, 0),
    "device": (str, "auto"),
    "arch": (OBJECT, REQUIRED),
    "data_loader": (OBJECT, REQUIRED),
    "optimizer": (OBJECT, REQUIRED),
    "loss": (OBJECT, REQUIRED),
    "metrics": (list, ["accuracy"]),
    "lr_scheduler": (OBJECT, None),
    "trainer": (TRAINER_SCHEMA, REQUIRED),
    "constraints": (CONSTRAINTS_SCHEMA, {}),
}

# Arguments that the code passes itself, so the config must not (and need not) give them.
PROVIDED_ARGS = {
    "optimizer": {"params"},
    "lr_scheduler": {"optimizer"},
    "lr_scheduler.OneCycleLR": {"optimizer", "epochs", "steps_per_epoch", "total_steps"},
}
# Required arguments that the code fills in when the config leaves them out.
OPTIONAL_ARGS = {"lr_scheduler.OneCycleLR": {"max_lr"}}  # default: the optimizer's lr


def _registry():
    """Where each `"type"` section looks its class up, first module first."""
    import torch

    import data_loader.data_loaders
    import model.loss
    import model.model

    return {
        "arch": [model.model],
        "data_loader": [data_loader.data_loaders],
        "optimizer": [torch.optim],
        "lr_scheduler": [torch.optim.lr_scheduler],
        "loss": [model.loss, torch.nn],
    }


def _metric_names():
    import model.metric

    return [
        n
        for n, f in vars(model.metric).items()
        if callable(f) and not n.startswith("_") and f.__module__ == model.metric.__name__
    ]


def _type_name(expected):
    if isinstance(expected, tuple):
        return "one of " + ", ".join(repr(c) for c in expected)
    if isinstance(expected, dict):
        return "an object"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string", list: "a list"}.get(
        expected, str(expected)
    )


def _matches(value, annotation):
    """True/False when the annotation says whether the value fits; None when it cannot tell."""
    if annotation is inspect.Parameter.empty or isinstance(annotation, str) or annotation is typing.Any:
        return None
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        results = [_matches(value, a) for a in typing.get_args(annotation)]
        if any(r is True for r in results):
            return True
        return False if all(r is False for r in results) else None
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if annotation in (list, tuple) or origin in (list, tuple, typing.Sequence):
        return isinstance(value, list)
    if annotation is dict or origin is dict:
        return isinstance(value, dict)
    if isinstance(annotation, type) and origin is None:  # e.g. torch.Tensor: no JSON value is one
        return isinstance(value, annotation)
    return None


def check_call_args(fn, args, where, provided=(), optional=()):
    """Check `args` (a dict from the config) against the signature of `fn`: no unknown names, no
    missing required ones, and values of the annotated (or default's) type."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
    named = {n: p for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n != "self"}
    for key, value in args.items():
        if key in provided:
            raise ConfigError(f"{where}.{key}: is set by the trainer; remove it from the config")
        if key not in named:
            if takes_kwargs:
                continue
            raise ConfigError(
                f"{where}.{key}: unknown argument of {fn.__name__} "
                f"(expected one of: {', '.join(sorted(set(named) - set(provided)))})"
            )
        param = named[key]
        ok = _matches(value, param.annotation)
        if (
            ok is None
            and param.annotation is inspect.Parameter.empty
            and param.default not in (None, inspect.Parameter.empty)
        ):
            ok = _matches(value, type(param.default))
        if ok is False:
            shown = (
                param.annotation if param.annotation is not inspect.Parameter.empty else type(param.default).__name__
            )
            shown = getattr(shown, "__name__", str(shown).replace("typing.", ""))
            raise ConfigError(f"{where}.{key}: expected {shown}, got {json.dumps(value)}")
    missing = [
        n
        for n, p in named.items()
        if p.default is inspect.Parameter.empty and n not in args and n not in provided and n not in optional
    ]
    if missing:
        raise ConfigError(f"{where}: missing argument(s) {', '.join(missing)} of {fn.__name__}")


def _validate(config, schema, where=""):
    """Return a copy of `config` with defaults filled in; raise ConfigError on any unknown,
    missing or mistyped key."""
    if not isinstance(config, dict):
        raise ConfigError(f"{where or 'config'}: expected an object, got {json.dumps(config)}")
    unknown = sorted(set(config) - set(schema))
    if unknown:
        raise ConfigError(
            f"{where + '.' if where else ''}{unknown[0]}: unknown config key (expected one of: {', '.join(schema)})"
        )
    out = {}
    for key, (expected, default) in schema.items():
        path = f"{where}.{key}" if where else key
        if key not in config:
            if default is REQUIRED:
                raise ConfigError(f"{path}: missing config key")
            out[key] = _validate(default, expected, path) if isinstance(expected, dict) else copy.deepcopy(default)
            continue
        value = config[key]
        if isinstance(expected, dict):
            out[key] = _validate(value, expected, path)
        elif expected == OBJECT:
            if value is None and default is None:
                out[key] = None
                continue
            if not isinstance(value, dict) or not isinstance(value.get("type"), str):
                raise ConfigError(f'{path}: expected {{"type": <name>, "args": {{...}}}}, got {json.dumps(value)}')
            extra = sorted(set(value) - {"type", "args"})
            if extra:
                raise ConfigError(f"{path}.{extra[0]}: unknown config key (expected type, args)")
            args = value.get("args", {})
            if not isinstance(args, dict):
                raise ConfigError(f"{path}.args: expected an object, got {json.dumps(args)}")
            out[key] = {"type": value["type"], "args": copy.deepcopy(args)}
        elif isinstance(expected, tuple):
            if value not in expected:
                raise ConfigError(f"{path}: expected {_type_name(expected)}, got {json.dumps(value)}")
            out[key] = value
        else:
            if _matches(value, expected) is not True:
                raise ConfigError(f"{path}: expected {_type_name(expected)}, got {json.dumps(value)}")
            out[key] = copy.deepcopy(value)
    return out


def resolve(section, type_name, modules):
    """Find `type_name` in the first module of `modules` that has it."""
    for module in modules:
        obj = getattr(module, type_name, None)
        if obj is not None and callable(obj) and not type_name.startswith("_"):
            return obj
    names = ", ".join(m.__name__ for m in modules)
    raise ConfigError(f"{section}.type: {type_name!r} is not found in {names}")


def parse_number(text):
    """'5000' -> 5000, '0.1' -> 0.1 (for --validation_split)."""
    try:
        return int(text)
    except ValueError:
        return float(text)


# Command-line overrides: flag -> (type, path of the key in the config).
OVERRIDES = {
    "--lr": (float, ("optimizer", "args", "lr")),
    "--bs": (int, ("data_loader", "args", "batch_size")),
    "--epochs": (int, ("trainer", "epochs")),
    "--data_dir": (str, ("data_loader", "args", "data_dir")),
    "--validation_split": (parse_number, ("data_loader", "args", "validation_split")),
    "--train_subset": (int, ("data_loader", "args", "train_subset")),
    "--num_workers": (int, ("data_loader", "args", "num_workers")),
    "--seed": (int, ("seed",)),
    "--device": (str, ("device",)),
    "--save_dir": (str, ("trainer", "save_dir")),
}


def overrides_from_args(args):
    """{path in the config: value} for every override flag given on the command line."""
    values = {path: getattr(args, flag.lstrip("-"), None) for flag, (_, path) in OVERRIDES.items()}
    return {path: value for path, value in values.items() if value is not None}


def add_override_flags(parser, flags=tuple(OVERRIDES)):
    for flag in flags:
        kind, path = OVERRIDES[flag]
        parser.add_argument(flag, type=kind, default=None, help=f"override {'.'.join(path)}")


def load_json(path):
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the config ({e})") from None


def _alive(pid):
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ConfigParser:
    def __init__(self, config, resume=None, modification=None, run_id=None):
        """
        config: dict as read from config.json.
        resume: path of a checkpoint to continue from, or None.
        modification: {path tuple: value} applied before validation; None values are skipped.
        run_id: name of the run folder (default: a timestamp).
        """
        if not isinstance(config, dict):
            raise ConfigError(
                f"config: expected a JSON object {{...}}, got {type(config).__name__} {json.dumps(config)[:40]}"
            )
        config = copy.deepcopy(config)
        for path, value in (modification or {}).items():
            if value is not None:
                _set_by_path(config, path, value)
        self._config = _validate(config, SCHEMA)
        self._check_objects()
        self.resume = Path(resume) if resume else None
        if self.resume is not None and (self.resume.parent / "config.json").is_file():
            self.run_dir = self.resume.parent  # continue a run in its own folder
        else:
            run_id = run_id or datetime.now().strftime("%m%d_%H%M%S")
            self.run_dir = Path(self["trainer"]["save_dir"]) / self["name"] / run_id

    def _check_objects(self):
        registry = _registry()
        for section, modules in registry.items():
            entry = self._config.get(section)
            if entry is None:
                continue
            fn = resolve(section, entry["type"], modules)
            key = f"{section}.{entry['type']}"
            provided = PROVIDED_ARGS.get(key, PROVIDED_ARGS.get(section, ()))
            check_call_args(fn, entry["args"], f"{section}.args", provided, OPTIONAL_ARGS.get(key, ()))
        known = _metric_names()
        for i, name in enumerate(self._config["metrics"]):
            if name not in known:
                raise ConfigError(f"metrics[{i}]: unknown metric {name!r} (expected one of: {', '.join(known)})")
        mode, _, metric = self._config["trainer"]["monitor"].partition(" ")
        if self._config["trainer"]["monitor"] != "off" and (mode not in ("min", "max") or not metric):
            raise ConfigError(
                'trainer.monitor: expected "off" or "min <metric>" / "max <metric>", '
                f"got {self._config['trainer']['monitor']!r}"
            )
        logged = ["loss", "val_loss", *self._config["metrics"], *(f"val_{m}" for m in self._config["metrics"])]
        if self._config["trainer"]["monitor"] != "off" and metric not in logged:
            raise ConfigError(f"trainer.monitor: {metric!r} is not logged (expected one of: {', '.join(logged)})")
        for key in ("epochs", "save_period"):
            if self._config["trainer"][key] < 1:
                raise ConfigError(f"trainer.{key}: expected an integer >= 1, got {self._config['trainer'][key]}")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self._config["name"]):
            raise ConfigError(
                f"name: {self._config['name']!r} is not a plain folder name (letters, digits, '.', '_', '-')"
            )

    @classmethod
    def from_args(cls, args):
        """Build from parsed command-line arguments: `args.config` and/or `args.resume`, plus the
        override flags of OVERRIDES present on `args`."""
        if args.config:
            config = load_json(args.config)
        elif getattr(args, "resume", None):
            from utils.checkpoint import load_checkpoint

            config = load_checkpoint(args.resume)["config"]
            if not isinstance(config, dict):
                raise CheckpointError(f"{args.resume}: its 'config' is not an object ({type(config).__name__})")
        else:
            raise ConfigError("no config: give -c config.json, or --resume a checkpoint")
        return cls(config, getattr(args, "resume", None), overrides_from_args(args))

    def init_obj(self, name, *args, **kwargs):
        """`config[name]` = {"type": T, "args": A} -> T(*args, **A), keyword arguments given
        here taking precedence over A."""
        entry = self[name]
        fn = resolve(name, entry["type"], _registry()[name])
        if not getattr(fn, "__module__", "").startswith("torch."):
            # the args were checked against the signature when the config was read; a project class
            # raises ConfigError for values it refuses, and any other error is a bug: keep its traceback
            return fn(*args, **{**entry["args"], **kwargs})
        try:
            return fn(*args, **{**entry["args"], **kwargs})
        except ValueError as e:  # torch's own checks of values, e.g. "Invalid learning rate: -1"
            raise ConfigError(f"{name}.args: {entry['type']} refused a value: {e}") from None

    def make_run_dir(self):
        """Create the run folder and write the effective config into it. A new run claims a folder of
        its own (two runs started in the same second get `<id>` and `<id>_2`); a resumed run's folder
        is locked against a second process resuming it, and temp files of a save that was killed
        half-way are removed."""
        try:
            if self.resume is not None and self.run_dir == self.resume.parent:
                self._lock()
                for tmp in self.run_dir.glob("*.pth.*.tmp"):
                    tmp.unlink()
            else:
                base = self.run_dir
                for n in itertools.count(2):
                    try:
                        self.run_dir.mkdir(parents=True, exist_ok=False)
                        break
                    except FileExistsError:
                        self.run_dir = base.with_name(f"{base.name}_{n}")
                self._lock()
            (self.run_dir / "config.json").write_text(json.dumps(self._config, indent=4) + "\n")
        except OSError as e:
            raise ConfigError(
                f"trainer.save_dir: cannot write the run folder {self.run_dir} ({e.strerror or e})"
            ) from None
        return self.run_dir

    def _lock(self):
        lock = self.run_dir / ".lock"
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    pid = int(lock.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if _alive(pid):
                    raise ConfigError(
                        f"{self.run_dir}: another process (pid {pid}) is training in this run folder; "
                        f"wait for it to end or stop it (or delete {lock} if that process is gone)"
                    ) from None
                lock.unlink(missing_ok=True)  # left by a process that was killed
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            self._locked = lock
            return

    def release_run_dir(self):
        lock = getattr(self, "_locked", None)
        if lock is not None:
            lock.unlink(missing_ok=True)
            self._locked = None

    def __getitem__(self, name):
        return self._config[name]

    @property
    def config(self):
        return self._config


def _set_by_path(tree, path, value):
    node = tree
    for key in path[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{'.'.join(path)}: cannot override, {key} is not an object")
    node[path[-1]] = value


def base_argparser(description):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("-c", "--config", default=None, help="config file path (default: the checkpoint's config)")
    parser.add_argument("-r", "--resume", default=None, help="path of a checkpoint to resume from")
    return parser
