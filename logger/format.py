"""The epoch-log format (one `    key            : value` line per key), and as
a table (metrics.csv, one row per epoch)."""

import csv

from utils.paths import atomic_write


def format_value(key, value):
    """Exactly the epoch-log format: accuracies with 2 decimals, losses with 4, the lr compact."""
    if isinstance(value, (int, str)):
        return str(value)
    if "acc" in key:
        return f"{value:.2f}"
    if key == "lr":
        return f"{value:.6g}"
    if key.endswith("_time"):
        return f"{value:.1f}"
    return f"{value:.4f}"


def format_log(log, width=15):
    """One `    key            : value` line per key; a block with a longer key (the TTA figures) widens
    its own column, so its colons still line up."""
    width = max([width, *(len(str(key)) for key in log)])
    return "\n".join(f"    {str(key):{width}s}: {format_value(key, value)}" for key, value in log.items())


def write_csv(history, path):
    """The epoch logs as CSV, one row per epoch, the columns in the order the keys first appear (a
    key an epoch did not log, such as image_size after resizing stops, is left empty)."""
    columns = list(dict.fromkeys(key for log in history for key in log))
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)
    return path
