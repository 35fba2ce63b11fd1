"""Read config.json, check every key against a schema, apply command-line overrides and build
objects by name (`"type"` + `"args"`), as in pytorch-template, with three changes:

* an unknown key, a missing key or a value of the wrong type is a `ConfigError` naming the key
  (nanoGPT-style; the keys, types and defaults are in utils/config_schema.py), and the `args` of
  every `"type"` section are checked against the signature of the class or function they name;
* parsing creates no folders: `ConfigParser.make_run_dir()` does, when training starts;
* the run folder is one place, `<save_dir>/<name>/<run_id>/`, holding the config copy, checkpoints,
  `info.log`, TensorBoard events and the report.
"""

import copy
import json
import math
import shlex
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from utils.config_schema import parse_monitor, validate
from utils.errors import ArgumentError, CheckpointError, ConfigError
from utils.log_keys import LOSS, val_key
from utils.overrides import overrides_from_args
from utils.run_folder import make_run_dir, release
from utils.signature import check_call_args

# Arguments that the code passes itself, so the config must not (and need not) give them; a
# scheduler's own (epochs, steps_per_epoch, ...) are in its row of trainer.schedulers.SCHEDULES.
PROVIDED_ARGS = {"optimizer": {"params"}, "lr_scheduler": {"optimizer"}}


def _run_args(section, type_name):
    """(arguments the run provides, required arguments it fills in when missing) for one section."""
    if section != "lr_scheduler":
        return PROVIDED_ARGS.get(section, set()), set()
    from trainer.schedulers import schedule_of

    schedule = schedule_of(type_name)
    return PROVIDED_ARGS[section] | {*schedule.given, *schedule.refused}, set(schedule.filled)


@contextmanager
def args_named(section):
    """Around a call of the class a config section names: its ArgumentError becomes a ConfigError
    naming the key, `<section>.args.<arg>: ...`."""
    try:
        yield
    except ArgumentError as e:
        where = f"{section}.args.{e.arg}" if e.arg else f"{section}.args"
        raise ConfigError(f"{where}: {e.message}") from None


def _registry():
    """Where each `"type"` section looks its class up, first module first."""
    import torch

    import data_loader
    import model
    import model.loss
    import trainer.schedulers
    from base import BaseDataLoader, BaseModel
    from utils.registry import package_classes

    return {
        "arch": [package_classes(model, BaseModel)],
        "data_loader": [package_classes(data_loader, BaseDataLoader)],
        "optimizer": [torch.optim],
        "lr_scheduler": [trainer.schedulers, torch.optim.lr_scheduler],
        "loss": [model.loss, torch.nn],
    }


def expected_kinds():
    """What each `"type"` section must name: a class, a subclass of these (and not the base itself)."""
    import torch

    from base import BaseDataLoader, BaseModel

    schedulers = (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    return {
        "arch": (BaseModel,),
        "data_loader": (BaseDataLoader,),
        "optimizer": (torch.optim.Optimizer,),
        "lr_scheduler": schedulers,
        "loss": (torch.nn.Module,),
    }


BASES_NOT_USABLE = ("Optimizer", "LRScheduler", "_LRScheduler", "Module", "BaseModel", "BaseDataLoader")


def resolve(section, type_name, modules):
    """Find `type_name` in the first module of `modules` that has it: a class of the kind the section
    needs (a helper, an exception or a base class that lives in the same module is not one)."""
    kinds = expected_kinds().get(section)
    for module in modules:
        obj = getattr(module, type_name, None)
        if obj is None or not callable(obj) or type_name.startswith("_"):
            continue
        if kinds is not None and not (
            isinstance(obj, type) and issubclass(obj, kinds) and obj.__name__ not in BASES_NOT_USABLE
        ):
            wanted = " or ".join(k.__name__ for k in kinds)
            raise ConfigError(f"{section}.type: {type_name!r} is not a {wanted} class that can be used here")
        return obj
    names = ", ".join(m.__name__ for m in modules)
    raise ConfigError(f"{section}.type: {type_name!r} is not found in {names}")


BASE_KEY = "base"  # a config file may name another one it starts from and hold only its changes


def merge_config(base, changes):
    """`base` with `changes` laid over it: objects merge key by key, any other value (a list, a
    number, null) replaces the base's, and so does an object that names another "type" than the
    base's (the arguments of one class are no defaults for another)."""
    merged = dict(base)
    for key, value in changes.items():
        old = base.get(key)
        same_kind = (
            isinstance(value, dict) and isinstance(old, dict) and value.get("type", old.get("type")) == old.get("type")
        )
        merged[key] = merge_config(old, value) if same_kind else value
    return merged


def config_diff(base, changed):
    """The smallest `changes` with merge_config(base, changes) == changed: objects of the same class
    compare key by key, anything else that differs is taken whole (a key `changed` lacks is kept)."""
    diff = {}
    for key, value in changed.items():
        old = base.get(key)
        if value == old and key in base:
            continue
        same_kind = isinstance(value, dict) and isinstance(old, dict) and value.get("type") == old.get("type")
        diff[key] = config_diff(old, value) if same_kind else value
    return diff


def load_config(path, _seen=()):
    """A config (or search space) file as a dict: JSON, or YAML for a .yaml / .yml file (the same
    schema either way). A missing or unreadable file is a one-line ConfigError with the line.
    A config with `"base": "other.json"` (a path relative to its own folder) is that file with this
    one's keys laid over it (merge_config), resolved here, before any check."""
    path = Path(path)
    loaded = _read_config(path)
    if not isinstance(loaded, dict) or BASE_KEY not in loaded:
        return loaded
    base = loaded.pop(BASE_KEY)
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: {BASE_KEY}: expected the path of the config this one changes, got {base!r}")
    base_path = path.parent / base
    if base_path.resolve() in _seen or base_path.resolve() == path.resolve():
        raise ConfigError(f"{path}: {BASE_KEY}: {base} leads back to a config already read (a loop of bases)")
    return merge_config(load_config(base_path, (*_seen, path.resolve())), loaded)


def _read_config(path):
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the config ({e})") from None
    try:
        return _parse_yaml(path, text) if path.suffix.lower() in (".yaml", ".yml") else _parse_json(path, text)
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a config") from None


def _parse_json(path, text):
    def no_repeats(pairs):
        keys = [k for k, _ in pairs]
        repeated = next((k for k in keys if keys.count(k) > 1), None)
        if repeated is not None:
            raise ConfigError(f"{path}: the key {repeated!r} appears twice in one object (the last would win unseen)")
        return dict(pairs)

    try:
        return json.loads(text, object_pairs_hook=no_repeats)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None


MAX_DEPTH = 100  # levels of nesting a YAML config may have (config.json has 5)


def _yaml_loader():
    """PyYAML's SafeLoader, with two changes for configs: `1e-3` is a number (YAML 1.2; YAML 1.1 needs
    `1.0e-3` and PyYAML reads `1e-3` as a string), and a key repeated in one mapping is an error (the
    last would win unseen; JSON configs refuse it too)."""
    import re

    import yaml

    class ConfigLoader(yaml.SafeLoader):
        pass

    ConfigLoader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    number = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")
    ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:float", number, list("-+0123456789"))

    def mapping(loader, node):
        seen = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=True)
            if key in seen:
                raise ConfigError(
                    f"the key {key!r} appears twice in one mapping (again at line {key_node.start_mark.line + 1}; "
                    "the last would win unseen)"
                )
            seen.add(key)
        return loader.construct_mapping(node, deep=True)

    ConfigLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return ConfigLoader


def _parse_yaml(path, text):
    import yaml

    try:
        # anchors and aliases (&a, *a) are refused: a config needs none, and a few nested aliases can
        # stand for billions of values ("billion laughs")
        depth = 0
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                raise ConfigError(f"{path}: YAML aliases (*name) are not allowed in a config; write the values out")
            depth += isinstance(event, yaml.CollectionStartEvent) - isinstance(event, yaml.CollectionEndEvent)
            if depth > MAX_DEPTH:  # stopped here, before the parser spends seconds on thousands of levels
                raise RecursionError
        return yaml.load(text, Loader=_yaml_loader())  # noqa: S506 (a SafeLoader subclass)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise ConfigError(f"{path}: not valid YAML ({problem}{where})") from None


class ConfigParser:
    def __init__(self, config, resume=None, modification=None, run_id=None, checkpoint=None):
        """
        config: dict as read from config.json.
        resume: path of a checkpoint to continue from, or None.
        checkpoint: that file, already loaded (utils.checkpoint.load_checkpoint), or None to load it
            when first asked for (`resume_checkpoint`): a command reads it once.
        modification: {path tuple: value} applied before validation (None sets null: `--set trainer.ema=null`).
        run_id: name of the run folder (default: a timestamp).
        """
        if not isinstance(config, dict):
            raise ConfigError(
                f"config: expected a JSON object {{...}} (or a YAML mapping), got {type(config).__name__} "
                f"{json.dumps(config, default=str)[:40]}"
            )
        config = copy.deepcopy(config)
        # the length the file's recipe was made for, before --epochs may change it
        self.recipe_epochs = (
            (config.get("trainer") or {}).get("epochs") if isinstance(config.get("trainer"), dict) else None
        )
        for path, value in (modification or {}).items():
            set_key_path(config, path, value)
        _check_finite(config)
        self._config = validate(config)
        self.monitor = parse_monitor(self._config["trainer"]["monitor"])  # the one parse of trainer.monitor
        self._check_objects()
        self.resume = Path(resume) if resume else None
        self._resume_checkpoint = checkpoint
        if self.resume is not None and (self.resume.parent / "config.json").is_file():
            self.run_dir = self.resume.parent  # continue a run in its own folder
        else:
            run_id = run_id or datetime.now().strftime("%m%d_%H%M%S")
            self.run_dir = Path(self["trainer"]["save_dir"]).expanduser() / self["name"] / run_id

    def _check_objects(self):
        registry = _registry()
        for section, modules in registry.items():
            entry = self._config.get(section)
            if entry is None:
                continue
            fn = resolve(section, entry["type"], modules)
            provided, filled = _run_args(section, entry["type"])
            check_call_args(fn, entry["args"], f"{section}.args", provided, filled)
        from model.metric import metric_specs

        names = [name for name, _, _ in metric_specs(self._config["metrics"])]
        from trainer.schedulers import check_monitor

        check_monitor(self._config["lr_scheduler"], self.monitor)
        logged = [LOSS, val_key(LOSS), *names, *(val_key(m) for m in names)]
        if self.monitor.mode != "off" and self.monitor.metric not in logged:
            raise ConfigError(
                f"trainer.monitor: {self.monitor.metric!r} is not logged (expected one of: {', '.join(logged)})"
            )

    @classmethod
    def from_args(cls, args):
        """Build from parsed command-line arguments: `args.config` and/or `args.resume`, plus the
        override flags of OVERRIDES present on `args`."""
        resume, checkpoint = getattr(args, "resume", None), None
        if not args.config and not resume:
            raise ConfigError("no config: give -c config.json, or --resume a checkpoint")
        if resume:
            from utils.checkpoint import load_checkpoint

            checkpoint = load_checkpoint(resume)
        if args.config:
            config = load_config(args.config)
        else:
            config = checkpoint["config"]
            if not isinstance(config, dict):
                raise CheckpointError(f"{resume}: its 'config' is not an object ({type(config).__name__})")
            config = _edited_run_config(Path(resume), config)
        return cls(config, resume, overrides_from_args(args), checkpoint=checkpoint)

    @property
    def resume_checkpoint(self):
        """The loaded checkpoint of `resume` (None without one), read from the file once."""
        if self._resume_checkpoint is None and self.resume is not None:
            from utils.checkpoint import load_checkpoint

            self._resume_checkpoint = load_checkpoint(self.resume)
        return self._resume_checkpoint

    def obj_type(self, name):
        """The class or function `config[name]["type"]` names."""
        return resolve(name, self[name]["type"], _registry()[name])

    def init_obj(self, name, *args, **kwargs):
        """`config[name]` = {"type": T, "args": A} -> T(*args, **A), keyword arguments given
        here taking precedence over A."""
        entry, fn = self[name], self.obj_type(name)
        if not getattr(fn, "__module__", "").startswith("torch."):
            # the args were checked against the signature when the config was read; a project class
            # raises ArgumentError for values it refuses (named here), and any other error is a bug:
            # keep its traceback
            with args_named(name):
                return fn(*args, **{**entry["args"], **kwargs})
        try:
            return fn(*args, **{**entry["args"], **kwargs})
        except (ValueError, TypeError, AttributeError) as e:  # torch's checks of values ("Invalid learning
            # rate: -1"), or a value of the wrong kind it used at once (scheduler names where SequentialLR
            # wants schedulers): the config's values are all a torch class is given here
            raise ConfigError(f"{name}.args: {entry['type']} refused a value ({type(e).__name__}: {e})") from None

    def make_run_dir(self):
        """Create the run folder (see utils.run_folder.make_run_dir) and write the effective config."""
        self.run_dir, self._locked = make_run_dir(self.run_dir, self.resume, self._config)
        return self.run_dir

    def release_run_dir(self):
        release(getattr(self, "_locked", None))
        self._locked = None

    def __getitem__(self, name):
        return self._config[name]

    @property
    def config(self):
        return self._config


def _edited_run_config(resume, saved):
    """The config a resume without -c uses: the checkpoint's, or the run folder's config.json when
    it was edited there and only keys a resume may change differ (epochs, verbosity, ...). Any
    other edit is refused before the resume would overwrite the file with the checkpoint's config."""
    from utils.resume_policy import config_changes, show_changes

    path = resume.parent / "config.json"
    if not path.is_file():
        return saved
    edited = load_config(path)
    if edited == saved:
        return saved
    if not isinstance(edited, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(edited).__name__}")
    changes = config_changes(saved, edited)
    if changes:
        raise ConfigError(
            f"{path}: edited since {resume.name} was saved ({show_changes(changes)}); a resumed run continues as "
            f"it was trained: undo the edit, or start a new run with  python train.py -c {shlex.quote(str(path))}"
        )
    return edited


def set_key_path(config, parts, value, create=True):
    """Set `value` at a key path (a tuple of parts) of a config dict, in place: the one path syntax of
    --set and of a search space. In a list, a part is an index (`augmentations.2.args.p`) or the
    `type` of one entry, which stands for that entry's args (`augmentations.CoarseDropout.p`).
    create: missing objects on the way are made (--set: the schema checks the keys after); else
    every part must exist but a new argument in an `args` object (checked against the signature)."""
    node, in_args = config, False
    for i, part in enumerate(parts):
        where, last = ".".join(map(str, parts[: i + 1])), i == len(parts) - 1
        if isinstance(node, list):
            node, in_args = _list_entry(node, part, where, last)
        elif isinstance(node, dict):
            if last:
                if part not in node and not (create or in_args):
                    raise ConfigError(f"{where}: no such key in the config")
                node[part] = value
                return
            if part not in node and not create:
                raise ConfigError(f"{where}: no such key in the config")
            node, in_args = node.setdefault(part, {}), part == "args"
        else:
            raise ConfigError(f"{where}: cannot go into {json.dumps(node)} (not an object or a list)")
    raise ConfigError("an empty key path")


def _list_entry(entries, part, where, last):
    """(the node a path part selects in a list, whether it is an args object): by index or by type."""
    if part.isdigit():
        if int(part) >= len(entries):
            raise ConfigError(f"{where}: no entry {part} in this list of {len(entries)}")
        if last:
            raise ConfigError(f"{where}: names a whole list entry; name the key to set in it, e.g. {where}.args.p")
        return entries[int(part)], False
    matches = [e for e in entries if isinstance(e, dict) and e.get("type") == part]
    if len(matches) != 1:
        names = ", ".join(str(e.get("type")) for e in entries if isinstance(e, dict))
        raise ConfigError(
            f"{where}: {'no' if not matches else 'more than one'} entry of type {part!r} in this list "
            f"(entries: {names}; or give its index)"
        )
    if last:
        raise ConfigError(f"{where}: names a whole list entry; add the argument to set, e.g. {where}.p")
    return matches[0].setdefault("args", {}), True


def _check_finite(tree, path=()):
    """NaN and Infinity parse (Python's JSON and YAML's .nan/.inf) and pass torch's checks (`lr < 0` is
    False for NaN), then ruin a run: no value of a config may be one."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, value in items:
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{'.'.join(map(str, (*path, key)))}: expected a finite number, got {value}")
        _check_finite(value, (*path, key))
