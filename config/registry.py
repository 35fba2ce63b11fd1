"""The classes a config may name, section by section, as one explicit list: a new network, data
loader or loss is an import and an entry here (docs/guide.md, "Extending"), and `resolve` looks a
`"type"` up in its section's list."""

import types

import torch

import model.loss
from base import BaseDataLoader, BaseModel
from config import schedules
from data_loader.data_loaders import Cifar10DataLoader
from model.model import DilatedNet
from model.teacher import TeacherNet
from utils.errors import ConfigError

ARCHS = types.SimpleNamespace(__name__="config/registry.py ARCHS", DilatedNet=DilatedNet, TeacherNet=TeacherNet)
DATA_LOADERS = types.SimpleNamespace(__name__="config/registry.py DATA_LOADERS", Cifar10DataLoader=Cifar10DataLoader)

# where each "type" section looks its class up, first place first
SECTIONS = {
    "arch": [ARCHS],
    "data_loader": [DATA_LOADERS],
    "optimizer": [torch.optim],
    "lr_scheduler": [schedules, torch.optim.lr_scheduler],
    "loss": [model.loss, torch.nn],
}

# what each section must name: a subclass of one of these (and not the base itself)
KINDS = {
    "arch": (BaseModel,),
    "data_loader": (BaseDataLoader,),
    "optimizer": (torch.optim.Optimizer,),
    "lr_scheduler": (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau),
    "loss": (torch.nn.Module,),
}
BASES_NOT_USABLE = ("Optimizer", "LRScheduler", "_LRScheduler", "Module", "BaseModel", "BaseDataLoader")
LISTED = {"arch": ARCHS, "data_loader": DATA_LOADERS}  # the project's own lists, named in errors


def resolve(section, type_name):
    """The class `type_name` of `section`, from the first place of SECTIONS[section] that has it;
    a ConfigError naming the key when none has it or it is not of the section's kind."""
    kinds = KINDS[section]
    for place in SECTIONS[section]:
        obj = getattr(place, type_name, None)
        if obj is None or not callable(obj) or type_name.startswith("_"):
            continue
        if not (isinstance(obj, type) and issubclass(obj, kinds) and obj.__name__ not in BASES_NOT_USABLE):
            wanted = " or ".join(k.__name__ for k in kinds)
            subclass = f" (it must subclass {kinds[0].__module__}.{wanted})" if section in LISTED else ""
            raise ConfigError(f"{section}.type: {type_name!r} is not a {wanted} class that can be used here{subclass}")
        return obj
    if section in LISTED:
        known = ", ".join(name for name in vars(LISTED[section]) if name != "__name__")
        raise ConfigError(
            f"{section}.type: {type_name!r} is not one of {known}; a class of your own is imported in "
            f"config/registry.py and added to {LISTED[section].__name__.split()[-1]} (docs/guide.md, Extending)"
        )
    names = ", ".join(place.__name__ for place in SECTIONS[section])
    raise ConfigError(f"{section}.type: {type_name!r} is not found in {names}")
