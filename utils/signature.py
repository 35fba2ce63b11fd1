"""Check a dict of arguments from a config against the signature of the function or class they are
for: unknown names, missing required ones and values of the wrong type become ConfigErrors naming the
key, before anything is called."""

import inspect
import json
import types
import typing

from utils.errors import ConfigError


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
