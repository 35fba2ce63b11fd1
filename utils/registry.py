"""Classes a config may name, found by scanning a package: a new file under model/ (or data_loader/)
that defines a subclass of the base class is usable by its class name, with no list to edit."""

import importlib
import pkgutil
import types

from utils.errors import ConfigError


def package_classes(package, base):
    """A namespace of every subclass of `base` defined in a module of `package` (by class name)."""
    found = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for name, obj in vars(module).items():
            if (
                isinstance(obj, type)
                and issubclass(obj, base)
                and obj is not base
                and obj.__module__ == module.__name__
            ):
                if name in found and found[name] is not obj:
                    raise ConfigError(
                        f"{package.__name__}: two classes named {name!r} ({found[name].__module__} and "
                        f"{module.__name__}); rename one"
                    )
                found[name] = obj
    return types.SimpleNamespace(__name__=f"{package.__name__}/*.py", **found)
