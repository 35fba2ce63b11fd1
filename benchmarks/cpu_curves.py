"""Validation accuracy against CPU minutes, one curve per run, from runs' metrics.csv: each epoch
costs either its own measured `epoch_time` (NAME=METRICS_CSV) or the CPU seconds per epoch measured
for the network at 16 and at 32 px (NAME=METRICS_CSV:S16:S32, benchmarks/epoch_benchmark.py):

    python -m benchmarks.cpu_curves --out docs/shapes.png \\
        --run "a_dilatednet=RUN/metrics.csv:25.0:57.6" --run "f_deep8=RUN/metrics.csv:27.0:53.1"
    python -m benchmarks.cpu_curves --out docs/time_to_accuracy.png \\
        --run "config.json=RUN/metrics.csv" --setup "config.json=13.5" --run "fast.json=RUN2/metrics.csv"

It also prints, for each run, the CPU minutes to the first epoch at --reach validation accuracies
(85, 87, 89 by default). --setup adds the minutes a run spends before its first epoch (a teacher's
passes over fixed views). With S16:S32 an epoch at another image size (progressive resizing) is costed
between the two figures in proportion to its pixel count, and the runs may have trained anywhere (a GPU,
another CPU): the x axis is what each epoch costs on the CPU the seconds were measured on, so curves
compare at equal CPU time. The measured times are only as good as the machine was quiet.
"""

import argparse
import csv
import sys

if not __package__:  # run as a file, the project's packages are not importable
    sys.exit("run it from the repository root as a module: python -m benchmarks.cpu_curves ...")

from logger.plots import _pyplot, _save
from utils.cli import run_main
from utils.errors import UserError


def parse_run(text):
    """'name=path:s16:s32' -> (name, path, s16, s32); 'name=path' -> (name, path, None, None): the
    epochs' measured times."""
    name, sep, rest = text.partition("=")
    path, *costs = rest.rsplit(":", 2)
    try:
        costs = [float(c) for c in costs]
    except ValueError:
        path, costs = rest, []  # a ':' inside the path
    if not sep or not path or len(costs) not in (0, 2):
        raise UserError(f"--run {text!r}: expected NAME=METRICS_CSV or NAME=METRICS_CSV:S16:S32 (seconds per epoch)")
    return name, path, *(costs or (None, None))


def parse_setup(texts):
    """['name=minutes', ...] -> {name: minutes}."""
    setup = {}
    for text in texts:
        name, sep, minutes = text.partition("=")
        try:
            setup[name] = float(minutes)
        except ValueError:
            raise UserError(f"--setup {text!r}: expected NAME=MINUTES") from None
    return setup


def epoch_cost(size, s16, s32):
    """CPU seconds of an epoch at `size` px, between the 16 and 32 px figures by pixel count."""
    return s16 + (s32 - s16) * (size**2 - 16**2) / (32**2 - 16**2)


def curve(path, s16, s32, setup=0.0):
    """(CPU minutes at the end of each epoch, validation accuracy of that epoch), from `setup` minutes
    on; each epoch costs its measured epoch_time when s16 is None."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise UserError(f"{path}: cannot read the metrics ({e.strerror})") from None
    minutes, accuracy, total = [], [], setup
    for row in rows:
        if s16 is not None:
            total += epoch_cost(int(float(row.get("image_size") or 32)), s16, s32) / 60
        elif row.get("epoch_time"):
            total += float(row["epoch_time"]) / 60
        else:
            raise UserError(f"{path}: no epoch_time column (an older run): give its costs as NAME=METRICS_CSV:S16:S32")
        minutes.append(total)
        accuracy.append(float(row["val_accuracy"]))
    return minutes, accuracy


def time_to_reach(minutes, accuracy, target):
    """(CPU minutes, epoch) at the end of the first epoch whose validation accuracy reaches `target`, or None."""
    for epoch, (spent, acc) in enumerate(zip(minutes, accuracy), 1):
        if acc >= target:
            return spent, epoch
    return None


def main(args):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    reach = ", ".join(f"{t:g}%" for t in args.reach)
    print(f"CPU minutes ({args.cpu}) to an accuracy of the evaluated split of {reach}")
    runs, setup = [parse_run(r) for r in args.run], parse_setup(args.setup)
    unknown = set(setup) - {run[0] for run in runs}
    if unknown:
        raise UserError(f"--setup {sorted(unknown)[0]}: no --run of that name")
    for name, path, s16, s32 in runs:
        minutes, accuracy = curve(path, s16, s32, setup.get(name, 0.0))
        reached = [time_to_reach(minutes, accuracy, t) for t in args.reach]
        shown = ["never" if r is None else f"{r[0]:.0f} min (epoch {r[1]})" for r in reached]
        print(
            f"  {name}: "
            + ", ".join(f"{t:g}%: {s}" for t, s in zip(args.reach, shown))
            + f"; {minutes[-1]:.0f} min in all"
        )
        ax.plot(minutes, accuracy, marker=".", label=f"{name} ({len(minutes)} epochs, final {accuracy[-1]:.2f}%)")
    ax.set_xlabel(f"CPU minutes ({args.cpu})")
    ax.set_ylabel("accuracy (%) of the split each run evaluates")
    ax.set_ylim(args.ymin, None)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(args.title, fontsize=10)
    fig.tight_layout()
    _save(fig, args.out)
    print(f"wrote {args.out}")


def cli(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, help="NAME=METRICS_CSV[:S16:S32] (repeat)")
    parser.add_argument("--setup", action="append", default=[], help="NAME=MINUTES before the run's first epoch")
    parser.add_argument("--out", required=True)
    parser.add_argument("--cpu", default="2 cores", help="the CPU the seconds were measured on, for the axis")
    parser.add_argument("--title", default="Validation accuracy at equal CPU time")
    parser.add_argument("--ymin", type=float, default=40)
    parser.add_argument("--reach", type=float, nargs="*", default=[85, 87, 89], help="accuracies to time (percent)")
    return run_main(main, parser.parse_args(argv), single_process="cpu_curves.py")


if __name__ == "__main__":
    sys.exit(cli())
