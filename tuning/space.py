"""A search space is data: a JSON file mapping key paths of config.json to distributions.

    {
      "params": {
        "optimizer.args.lr": {"type": "float", "low": 0.05, "high": 0.4, "log": true},
        "data_loader.args.augmentations.CoarseDropout.p": {"type": "float", "low": 0.1, "high": 0.5, "step": 0.05},
        "arch.args.widths": {"type": "categorical", "choices": [[64, 64, 144, 144], [48, 64, 160, 160]]}
      },
      "sampler": {"type": "TPESampler", "args": {"n_startup_trials": 4}},
      "pruner": {"type": "MedianPruner", "args": {"n_startup_trials": 3, "n_warmup_steps": 2}}
    }

A key path walks the config's objects by key; in a list of `{"type": ..., "args": {...}}` entries
(the augmentations) a part names an entry by its type and continues in its args. Every path and
every value a distribution can give is checked against config.json's schema when the space is
loaded, so a typo is a one-line error before any trial runs.
"""

import copy
import json
from dataclasses import dataclass, field

import optuna

from config import parser as config_parser
from config.parser import ConfigParser
from config.reading import load_config
from utils.errors import ConfigError
from utils.signature import check_call_args

DISTRIBUTION_KEYS = {
    "float": ({"low", "high"}, {"log", "step"}),
    "int": ({"low", "high"}, {"log", "step"}),
    "categorical": ({"choices"}, set()),
}


def suggest(trial, name, dist):
    """Optuna's public suggest_* call for one of the distributions a space file can give."""
    D = optuna.distributions
    if isinstance(dist, D.FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, D.IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_categorical(name, dist.choices)


@dataclass
class SearchSpace:
    params: dict  # key path -> optuna distribution
    sampler: dict = field(default_factory=lambda: {"type": "TPESampler", "args": {}})
    pruner: dict = field(default_factory=lambda: {"type": "MedianPruner", "args": {}})
    decode: dict = field(default_factory=dict)  # key path -> {categorical choice (str): JSON value}

    def suggest(self, trial):
        """{key path: value} sampled by an optuna trial."""
        values = {}
        for path, dist in self.params.items():
            value = suggest(trial, path, dist)
            values[path] = copy.deepcopy(self.decode[path][value]) if path in self.decode else _tidy(value, dist)
        return values

    def decode_params(self, params):
        """A finished trial's params (as optuna stores them) -> the values written into the config."""
        return {
            p: copy.deepcopy(self.decode[p][v]) if p in self.decode else _tidy(v, self.params.get(p))
            for p, v in params.items()
        }

    def build_sampler(self):
        return _build(optuna.samplers, self.sampler)

    def build_pruner(self):
        return _build(optuna.pruners, self.pruner)


def _tidy(value, dist):
    """0.30000000000000004 -> 0.3 for a float drawn on a step grid (what a person would write)."""
    if isinstance(dist, optuna.distributions.FloatDistribution) and dist.step is not None:
        return round(value, 10)
    return value


def _build(module, entry):
    return getattr(module, entry["type"])(**entry["args"])


def set_key_path(config, path, value, create=False):
    """Set `value` at a dotted key path of a config dict (in place), as --set does
    (config.parser.set_key_path); unless `create`, every part must exist except a new argument of an
    `args` object."""
    config_parser.set_key_path(config, tuple(path.split(".")), value, create=create)


def check_sampler_fits(space):
    """A sampler that can only enumerate (BruteForceSampler, GridSampler) needs every distribution
    finite: a float without `step` is one line naming the parameter, before any study exists."""
    if space.sampler.get("type") not in ("BruteForceSampler", "GridSampler"):
        return
    for key, dist in space.params.items():
        if isinstance(dist, optuna.distributions.FloatDistribution) and dist.step is None:
            raise ConfigError(
                f"params.{key}: {space.sampler['type']} enumerates every value, so a float needs a step "
                '(e.g. "step": 0.05)'
            )


def apply_values(base_config, values, create=False):
    """A copy of `base_config` with each {key path: value} set (create: keys the file leaves to the
    schema's defaults, such as trainer.swa, are written in)."""
    config = copy.deepcopy(base_config)
    for path, value in values.items():
        set_key_path(config, path, value, create=create)
    return config


def _distribution(path, spec):
    if not isinstance(spec, dict) or spec.get("type") not in DISTRIBUTION_KEYS:
        raise ConfigError(
            f'params.{path}: expected {{"type": "float" | "int" | "categorical", ...}}, got {json.dumps(spec)}'
        )
    required, optional = DISTRIBUTION_KEYS[spec["type"]]
    args = {k: v for k, v in spec.items() if k != "type"}
    unknown = sorted(set(args) - required - optional)
    missing = sorted(required - set(args))
    if unknown or missing:
        what = f"unknown key {unknown[0]!r}" if unknown else f"missing key {missing[0]!r}"
        raise ConfigError(
            f"params.{path}: {what} for a {spec['type']} distribution "
            f"(expected {', '.join(sorted(required | optional))})"
        )
    for key in ("low", "high", "step"):
        value = args.get(key)
        if key in args and value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            raise ConfigError(f"params.{path}.{key}: expected a number, got {json.dumps(value)}")
    try:
        if spec["type"] == "float":
            check_call_args(optuna.distributions.FloatDistribution, args, f"params.{path}")
            return optuna.distributions.FloatDistribution(**args), None
        if spec["type"] == "int":
            check_call_args(optuna.distributions.IntDistribution, args, f"params.{path}")
            return optuna.distributions.IntDistribution(**args), None
        choices = args["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"params.{path}.choices: expected a non-empty list, got {json.dumps(choices)}")
        # optuna stores only scalars as choices: lists and objects go in as their JSON text
        if all(c is None or isinstance(c, (bool, int, float, str)) for c in choices):
            return optuna.distributions.CategoricalDistribution(choices), None
        labels = [json.dumps(c) for c in choices]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"params.{path}.choices: the same choice is listed twice")
        return optuna.distributions.CategoricalDistribution(labels), dict(zip(labels, choices))
    except ValueError as e:
        raise ConfigError(f"params.{path}: {e}") from None


def _extremes(dist, decode):
    """The values worth checking against the config's schema: the ends of a range, every choice."""
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return [decode[c] if decode else c for c in dist.choices]
    return [dist.low, dist.high]


def check_config(config, key):
    """Schema and signatures; for a network or augmentation parameter also build the network / the
    pipeline, which check what a signature cannot (list lengths, probabilities in [0, 1])."""
    parsed = ConfigParser(config)
    if key.startswith("arch."):
        parsed.init_obj("arch")
    if key.startswith("data_loader.args.augmentations."):
        from data_loader.transforms import build_augment

        build_augment(parsed["data_loader"]["args"].get("augmentations"), [0.0, 0.0, 0.0])


def _object_entry(space, key, module):
    entry = space.get(key, {"type": {"sampler": "TPESampler", "pruner": "MedianPruner"}[key], "args": {}})
    if not isinstance(entry, dict) or set(entry) - {"type", "args"} or not isinstance(entry.get("type"), str):
        raise ConfigError(
            f'{key}: expected {{"type": <optuna.{module.__name__.split(".")[-1]} class>, "args": {{...}}}}, '
            f"got {json.dumps(entry)}"
        )
    cls = getattr(module, entry["type"], None)
    if not isinstance(cls, type) or entry["type"].startswith("_"):
        raise ConfigError(f"{key}.type: {entry['type']!r} is not found in {module.__name__}")
    args = entry.get("args", {})
    if not isinstance(args, dict):
        raise ConfigError(f"{key}.args: expected an object, got {json.dumps(args)}")
    check_call_args(cls, args, f"{key}.args")
    return {"type": entry["type"], "args": args}


def load_space(path, base_config):
    """Read and check a search-space file against `base_config` (a config dict); ConfigErrors name
    the file and the key."""
    try:
        space = load_config(path)
        if not isinstance(space, dict):
            raise ConfigError(
                f"expected an object with params (and optionally sampler, pruner), got {json.dumps(space)[:60]}"
            )
        unknown = sorted(set(space) - {"params", "sampler", "pruner"})
        if unknown:
            raise ConfigError(f"{unknown[0]}: unknown key (expected params, sampler, pruner)")
        params = space.get("params")
        if not isinstance(params, dict) or not params:
            raise ConfigError("params: expected an object mapping config key paths to distributions")
        result = SearchSpace(
            {}, _object_entry(space, "sampler", optuna.samplers), _object_entry(space, "pruner", optuna.pruners)
        )
        for key, spec in params.items():
            dist, decode = _distribution(key, spec)
            for value in _extremes(dist, decode):
                try:
                    check_config(apply_values(base_config, {key: value}), key)
                except ConfigError as e:
                    raise ConfigError(f"params.{key}: with the value {json.dumps(value)}: {e}") from None
            result.params[key] = dist
            if decode:
                result.decode[key] = decode
        check_sampler_fits(result)
        return result
    except ConfigError as e:
        message = str(e)
        raise ConfigError(message if message.startswith(str(path)) else f"{path}: {message}") from None
