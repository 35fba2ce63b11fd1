"""Metrics by name. Each returns the *sum* over the batch of a per-image score, so that the
trainer divides by the exact image count of the epoch (never a mean of per-batch means).
Accuracies are in percent: an image scores 100 when right, 0 when wrong."""

import torch


def accuracy(output, target):
    return 100.0 * (output.argmax(dim=1) == target).sum()


def top_k_acc(output, target, k=3):
    top = torch.topk(output, k, dim=1).indices
    return 100.0 * (top == target[:, None]).any(dim=1).sum()


class Metric:
    """A metric function with its config args; `__name__` is the key it is logged under."""

    def __init__(self, name, fn, args):
        self.__name__, self.fn, self.args = name, fn, args

    def __call__(self, output, target):
        return self.fn(output, target, **self.args)


# The metrics a config may name: add a function above and a line here.
METRICS = {"accuracy": accuracy, "top_k_acc": top_k_acc}


def metric_specs(entries):
    """The config's `metrics` list -> [(logged name, function, args)]. An entry is a function name
    ("accuracy") or {"type": name, "args": {...}, "name": logged name (default: the type)}."""
    from logger.keys import reserved_reason
    from utils.errors import ConfigError
    from utils.signature import check_call_args

    known, specs = METRICS, []
    for i, entry in enumerate(entries):
        where = f"metrics[{i}]"
        if isinstance(entry, str):
            entry = {"type": entry}
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("type"), str)
            or set(entry) - {"type", "args", "name"}
        ):
            raise ConfigError(
                f'{where}: expected a metric name or {{"type": <name>, "args": {{...}}, "name": <logged as>}}'
            )
        if entry["type"] not in known:
            raise ConfigError(f"{where}: unknown metric {entry['type']!r} (expected one of: {', '.join(known)})")
        args = entry.get("args", {})
        if not isinstance(args, dict):
            raise ConfigError(f"{where}.args: expected an object")
        check_call_args(known[entry["type"]], args, f"{where}.args", provided={"output", "target"})
        name = entry.get("name", entry["type"])
        reason = reserved_reason(name) or (
            f"another entry is logged as {name!r}" if name in [s[0] for s in specs] else None
        )
        if reason:
            raise ConfigError(f'{where}: the name {name!r} is taken ({reason}); give this entry a "name" of its own')
        specs.append((name, known[entry["type"]], args))
    return specs


def build_metrics(entries):
    return [Metric(name, fn, args) for name, fn, args in metric_specs(entries)]
