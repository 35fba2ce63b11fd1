"""Reading a config file: JSON or YAML (by suffix), a `"base"` file it starts from (nanoGPT-style
configs as diffs), and one line naming the file for anything unreadable."""

import json
from pathlib import Path

from utils.errors import ConfigError

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


MAX_CONFIG_BYTES = 2**20  # config.json is 3 KB


def _read_config(path):
    if path.is_symlink() and not path.exists():
        raise ConfigError(f"{path}: a link that leads nowhere (broken, or a loop); expected a config file")
    if path.exists() and not path.is_file():
        raise ConfigError(f"{path}: not a regular file (a folder, a device or a pipe); expected a config file")
    if path.is_file() and path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: {path.stat().st_size:,} bytes, too large to be a config (at most 1 MB); not read")
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
