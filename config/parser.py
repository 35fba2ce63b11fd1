"""Read config.json, check every key against a schema, apply command-line overrides and build
objects by name (`"type"` + `"args"`), as in pytorch-template, with three changes:

* an unknown key, a missing key or a value of the wrong type is a `ConfigError` naming the key
  (nanoGPT-style; the keys, types and defaults are in config/schema.py), and the `args` of
  every `"type"` section are checked against the signature of the class or function they name;
* parsing creates no folders: the run's files are checkpoint/saver.py's (RunFiles), made when
  training starts.
Reading a file (JSON, YAML, `"base"`) is config/reading.py; the classes a config may name are listed
in config/registry.py.
"""

import copy
import json
import math
import shlex
from contextlib import contextmanager
from pathlib import Path

from checkpoint.resume import config_changes, show_changes
from checkpoint.schema import load_checkpoint
from config.overrides import overrides_from_args
from config.reading import load_config
from config.registry import SECTIONS, resolve
from config.schedules import check_monitor, check_swa, schedule_of
from config.schema import Config, check_combinations, parse, parse_monitor
from logger.keys import LOSS, val_key
from model.metric import metric_specs
from utils.errors import ArgumentError, CheckpointError, ConfigError
from utils.signature import check_call_args

# Arguments that the code passes itself, so the config must not (and need not) give them; a
# scheduler's own (epochs, steps_per_epoch, ...) are in its row of config.schedules.SCHEDULES.
PROVIDED_ARGS = {"optimizer": {"params"}, "lr_scheduler": {"optimizer"}}


def _run_args(section, type_name):
    """(arguments the run provides, required arguments it fills in when missing) for one section."""
    if section != "lr_scheduler":
        return PROVIDED_ARGS.get(section, set()), set()
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


class ConfigParser:
    def __init__(self, config, resume=None, modification=None, checkpoint=None):
        """
        config: dict as read from config.json.
        resume: path of a checkpoint to continue from, or None.
        checkpoint: that file, already loaded (checkpoint.schema.load_checkpoint), or None to load it
            when first asked for (`resume_checkpoint`): a command reads it once.
        modification: {path tuple: value} applied before validation (None sets null: `--set trainer.ema=null`).
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
        self.typed = parse(config)  # config.trainer.swa.start reads it
        self._config = self.typed.model_dump()  # config["trainer"]["swa"]["start"] reads this plain copy
        check_combinations(self._config["trainer"])
        check_swa(self._config["trainer"])
        self.monitor = parse_monitor(self._config["trainer"]["monitor"])  # the one parse of trainer.monitor
        self._check_objects()
        self.resume = Path(resume) if resume else None
        self._resume_checkpoint = checkpoint

    def _check_objects(self):
        for section in SECTIONS:
            entry = self._config.get(section)
            if entry is None:
                continue
            fn = resolve(section, entry["type"])
            provided, filled = _run_args(section, entry["type"])
            check_call_args(fn, entry["args"], f"{section}.args", provided, filled)
        names = [name for name, _, _ in metric_specs(self._config["metrics"])]
        check_monitor(self._config["lr_scheduler"], self.monitor)
        logged = [LOSS, val_key(LOSS), *names, *(val_key(m) for m in names)]
        if self.monitor.mode != "off" and self.monitor.metric not in logged:
            raise ConfigError(
                f"trainer.monitor: {self.monitor.metric!r} is not logged (expected one of: {', '.join(logged)})"
            )

    @classmethod
    def from_args(cls, args, extra=None):
        """Build from parsed command-line arguments: `args.config` and/or `args.resume`, plus the
        override flags of OVERRIDES present on `args` (and `extra` {key path: value}, which wins)."""
        resume, checkpoint = getattr(args, "resume", None), None
        if not args.config and not resume:
            raise ConfigError("no config: give -c config.json, or --resume a checkpoint")
        if resume:
            checkpoint = load_checkpoint(resume)
        if args.config:
            config = load_config(args.config)
        else:
            config = checkpoint["config"]
            if not isinstance(config, dict):
                raise CheckpointError(f"{resume}: its 'config' is not an object ({type(config).__name__})")
            config = _edited_run_config(Path(resume), config)
        return cls(config, resume, {**overrides_from_args(args), **(extra or {})}, checkpoint=checkpoint)

    @property
    def resume_checkpoint(self):
        """The loaded checkpoint of `resume` (None without one), read from the file once."""
        if self._resume_checkpoint is None and self.resume is not None:
            self._resume_checkpoint = load_checkpoint(self.resume)
        return self._resume_checkpoint

    def obj_type(self, name):
        """The class or function `config[name]["type"]` names."""
        return resolve(name, self[name]["type"])

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

    def __getitem__(self, name):
        return self._config[name]

    def __getattr__(self, name):
        """A section of the typed config (config/schema.py), as attributes: `config.trainer.epochs`."""
        if name in Config.model_fields and "typed" in self.__dict__:
            return getattr(self.typed, name)
        raise AttributeError(name)

    @property
    def config(self):
        return self._config


def _edited_run_config(resume, saved):
    """The config a resume without -c uses: the checkpoint's, or the run folder's config.json when
    it was edited there and only keys a resume may change differ (epochs, verbosity, ...). Any
    other edit is refused before the resume would overwrite the file with the checkpoint's config."""
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
