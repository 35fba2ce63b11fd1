"""The keys of config.json, their types and defaults, as pydantic models (strict: no unknown key,
no coercion of "10" to 10 or of 8.5 to 8). `validate` returns the config with every default filled
in, or raises a one-line ConfigError naming the key (nanoGPT-style). What depends on more than one
key (the monitor against the metrics, the args of each "type" against its signature) is checked
in config/parser.py."""

import copy
import json
import re
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from utils.errors import ConfigError
from utils.paths import SAVE_DIR


class Monitor(NamedTuple):
    """trainer.monitor, parsed once (ConfigParser.monitor): mode "off", "min" or "max", and the metric."""

    mode: str
    metric: str | None
    text: str


def parse_monitor(text):
    mode, _, metric = text.partition(" ")
    if text == "off":
        return Monitor("off", None, text)
    if mode not in ("min", "max") or not metric or " " in metric:
        raise ValueError('expected "off" or "min <metric>" / "max <metric>"')
    return Monitor(mode, metric, text)


def _plain_name(text):
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", text):
        raise ValueError("expected a plain folder name (letters, digits, '.', '_', '-')")
    return text


def _printable_path(text):
    """A path the logs, TensorBoard and the console can all write: valid UTF-8 text (a byte string
    that is not arrives from the command line as lone surrogates), without control characters."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("expected a path that is valid UTF-8 text") from None
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ValueError("expected a path without control characters (newlines, tabs)")
    return text


PathText = Annotated[str, AfterValidator(_printable_path)]


def _monitor_text(text):
    parse_monitor(text)
    return text


AtLeastOne = Annotated[int, Field(ge=1)]
Fraction = Annotated[float, Field(gt=0, lt=1)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class TypeArgs(Section):
    """A `{"type": name, "args": {...}}` section: the class or function `name`, called with `args`."""

    type: str
    args: dict[str, Any] = {}


def _arg_error(key, expected, value):
    """An error about one entry of a section's `args` (pydantic would name only `args`)."""
    return PydanticCustomError("arg_value", "{expected}", {"key": key, "expected": expected, "value": value})


class DataLoaderSection(TypeArgs):
    """The data_loader section. `args.batch_size`, for a loader that takes one, is the global batch:
    an integer >= 1 (whether it fits the data and the processes of the run is checked when those are
    known, in trainer/preflight.py)."""

    @model_validator(mode="after")
    def _batch_size(self):
        size = self.args.get("batch_size", 1)
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise _arg_error("batch_size", "an integer >= 1", size)
        return self


class EmaSection(Section):
    """Weight EMA (torch.optim.swa_utils.AveragedModel): after every step, average <- decay x average
    + (1 - decay) x weights, BatchNorm statistics included. Validation, checkpoints' state_dict,
    test.py and export.py use the average; the raw weights stay in full checkpoints for resume."""

    decay: Fraction = 0.999  # 1 / (1 - decay) steps: the averaging horizon


class SwaSection(Section):
    """Stochastic weight averaging (Izmailov et al., 2018; trainer/swa.py): from epoch `start` on, the
    weights at the end of every epoch join an equal-weight average, whose BatchNorm statistics are
    then recomputed on `bn_batches` training batches (null: all of them). Validation, checkpoints'
    state_dict, test.py and export.py use the average once it exists. With `lr` null the learning rate
    is the schedule's over all the epochs; with `lr` set, the schedule (lr_scheduler and progressive
    resizing) spans the epochs before `start` and the averaged epochs hold the learning rate at `lr`
    (the paper's constant rate): one config trains and then averages."""

    # the first epoch whose weights are averaged, or a fraction: averaging starts after that share of
    # trainer.epochs (0.834 of 240 epochs: from epoch 201; of 6: from epoch 6), so --epochs keeps the shape
    start: AtLeastOne | Fraction
    bn_batches: AtLeastOne | None = None  # training batches that recompute the average's BatchNorm statistics
    lr: Annotated[float, Field(gt=0)] | None = None  # the constant learning rate of the averaged epochs


class MixSection(Section):
    """Batch-level MixUp or CutMix (torchvision.transforms.v2), after the per-image augmentations:
    each batch is mixed with probability p, ramped linearly from 0 over the first ramp_epochs."""

    type: Literal["MixUp", "CutMix"]
    alpha: Annotated[float, Field(gt=0)] = 1.0  # Beta(alpha, alpha) draws the mixing weight
    p: Annotated[float, Field(ge=0, le=1)] = 0.5
    ramp_epochs: Annotated[int, Field(ge=0)] = 0


class ResizeSection(Section):
    """Progressive resizing: the first `until` fraction of the epochs trains on smaller images, from
    min_size up to the full size in steps of 4 pixels (bilinear, antialiased); the network is fully
    convolutional with global pooling, so it runs at any size. Validation is always at full size."""

    min_size: Annotated[int, Field(ge=8)]
    until: Annotated[float, Field(gt=0, le=1)] = 0.5


class DistillSection(Section):
    """Knowledge distillation (trainer/distill.py): loss = (1 - alpha) x the criterion + alpha x T^2 x
    KL(teacher || student) at temperature T; the teacher is a checkpoint of the same classes, run on
    the same augmented images (tta "flip": the mean of its logits of each image and its mirror)."""

    teacher: PathText
    alpha: Annotated[float, Field(ge=0, le=1)] = 0.9
    temperature: Annotated[float, Field(gt=0)] = 4.0
    tta: Literal["none", "flip"] = "none"
    # k > 0: each training image is one of k fixed augmented views, the teacher's logits of each computed
    # once (k teacher passes over the data, cached in <save_dir>/teacher_views/); 0: the teacher on every batch
    views: Annotated[int, Field(ge=0, le=64)] = 0


class TrainerSection(Section):
    epochs: AtLeastOne
    limit_batches: AtLeastOne | None = None  # train and validate on the first N batches of each epoch (a check)
    clip_grad_norm: Annotated[float, Field(gt=0)] | None = None  # clip the gradients' total L2 norm to this
    # gradient accumulation: batches of batch_size / accumulate, one step per `accumulate` of them (the
    # global batch and the schedule's steps stay those of batch_size; it saves memory, not time)
    accumulate: AtLeastOne = 1
    save_dir: PathText = SAVE_DIR
    save_period: AtLeastOne = 10  # checkpoint-epochN.pth every this many epochs (last.pth: every epoch)
    verbosity: Literal[0, 1, 2] = 2  # 0 warnings, 1 info, 2 debug
    # "off", or "min <metric>" / "max <metric>" for model_best.pth (the metric is checked against the
    # logged ones in config/parser.py, which knows the metrics)
    monitor: Annotated[str, AfterValidator(_monitor_text)] = "max val_accuracy"
    early_stop: Annotated[int, Field(ge=0)] = 0  # epochs without improvement of the monitor; 0: never stop early
    tensorboard: bool = True
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    channels_last: bool = False
    report: bool = True  # plots and report.md in the run folder at the end
    sync_bn: bool = False  # DDP on CUDA: SyncBatchNorm
    # DDP: seconds before a silent process counts as lost (at most a week: larger ones overflow a timedelta)
    dist_timeout: Annotated[int, Field(ge=1, le=7 * 24 * 3600)] = 600
    ema: EmaSection | None = None  # null: no weight averaging
    swa: SwaSection | None = None  # null: no stochastic weight averaging
    init: PathText | None = None  # a checkpoint or export whose weights a new run starts from (null: random)
    mix: MixSection | None = None  # null: no MixUp / CutMix
    progressive_resize: ResizeSection | None = None  # null: every epoch at full size
    distill: DistillSection | None = None  # null: the labels alone


class ConstraintsSection(Section):
    """The spec's rules (C1C2C3C4 family), checked on the network (model/spec.py) before training."""

    max_params: int = 100_000
    min_receptive_field: int = 53
    min_depthwise_separable: int = 2
    min_dilated: int = 1
    require_gap: bool = True
    forbid_maxpool: bool = True
    required_augmentations: list[str] = ["HorizontalFlip", "ShiftScaleRotate|Affine", "CoarseDropout", "ToGray"]
    enforce: bool = True  # false: report broken rules and train anyway


class Config(Section):
    name: Annotated[str, AfterValidator(_plain_name)]  # the run folder's parent: <save_dir>/<name>/<run>
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 0  # what torch, numpy and random all accept
    device: str = "auto"
    arch: TypeArgs
    data_loader: DataLoaderSection
    optimizer: TypeArgs
    loss: TypeArgs
    metrics: list[Any] = ["accuracy"]  # names, or {"type": name, "args": {...}} (model/metric.py checks them)
    lr_scheduler: TypeArgs | None = None
    trainer: TrainerSection
    constraints: ConstraintsSection | None = None  # no section: no constraints (train.py says so)


# Options that lost on record and were removed (docs/experiments.md keeps their rows and the commit
# that last held each): a saved config with one of them off still loads; one that turns it on is refused.
RETIRED = (
    ("trainer", "selective_backprop"),
    ("trainer", "norm"),
    ("trainer", "lookahead"),
    ("arch", "args", "whiten"),
    ("arch", "args", "dirac"),
)


def drop_retired(config):
    """`config` without the RETIRED keys that are off (null or false); ConfigError for one that is on."""
    config = copy.deepcopy(config)
    for *parents, key in RETIRED:
        node = config
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or key not in node:
            continue
        if node[key] not in (None, False):
            raise ConfigError(
                f"{'.'.join((*parents, key))}: this option was removed (it did not beat the recipe: "
                "docs/experiments.md); delete the key"
            )
        del node[key]
    return config


def parse(config):
    """`config` (a dict from JSON) as the typed Config, defaults filled in; ConfigError on the first
    bad key."""
    try:
        return Config.model_validate(drop_retired(config))
    except ValidationError as e:
        raise ConfigError(_message(e.errors()[0])) from None


def validate(config):
    """`config` (a dict from JSON) with defaults filled in, as a plain dict; ConfigError on the first bad key."""
    return parse(config).model_dump()


BOUNDS = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
EXPECTED = {  # pydantic's error type -> what the key expects, in the words of the rest of the project
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "an object",
    "model_type": "an object",
}


def _message(error):
    loc, kind, value = error["loc"], error["type"], error["input"]
    path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".") or "config"
    if kind == "arg_value":
        ctx = error["ctx"]
        return f"{path}.args.{ctx['key']}: expected {ctx['expected']}, got {json.dumps(ctx['value'], default=str)}"
    if kind == "missing":
        return f"{path}: missing config key"
    if kind == "extra_forbidden":
        fields = _section(loc[:-1]).model_fields
        return f"{path}: unknown config key (expected one of: {', '.join(fields)})"
    if kind == "model_type" and issubclass(_section(loc), TypeArgs):
        expected = '{"type": <name>, "args": {...}}'
    elif kind in BOUNDS:
        bound = next(iter(error["ctx"].values()))
        number = "an integer" if isinstance(bound, int) and kind == "greater_than_equal" else "a number"
        expected = f"{number} {BOUNDS[kind]} {bound}"
    elif kind == "value_error":
        expected = str(error["ctx"]["error"]).removeprefix("expected ")
    elif kind == "literal_error":
        expected = f"one of {error['ctx']['expected']}"
    else:
        expected = EXPECTED.get(kind, error["msg"].lower())
    return f"{path}: expected {expected}, got {json.dumps(value, default=str)}"


def _section(loc):
    """The model class of the section at `loc` (a tuple of keys from the top)."""
    model = Config
    for key in loc:
        annotation = model.model_fields[key].annotation
        model = next(a for a in (annotation, *getattr(annotation, "__args__", ())) if isinstance(a, type))
    return model


# trainer options that cannot be combined: (key, others, what the two would do to each other)
EXCLUSIVE = (
    ("swa", ("ema",), "both choose the weights that are evaluated and saved"),
    ("distill", ("mix",), "it changes the batch or its targets after the teacher has seen it"),
)


def check_combinations(trainer_cfg):
    """One line for the first pair of EXCLUSIVE options that are both on."""
    for key, others, why in EXCLUSIVE:
        refuse_combined(trainer_cfg, key, others, why)


def refuse_combined(trainer_cfg, key, others, why):
    """One line when trainer.`key` is on together with any of trainer.`others` (options that cannot
    be combined); `why` says what the two would do to each other."""
    clash = [other for other in others if trainer_cfg.get(other)]
    if trainer_cfg.get(key) and clash:
        raise ConfigError(f"trainer.{key}: cannot be combined with trainer.{clash[0]} ({why}); set one of them to null")
