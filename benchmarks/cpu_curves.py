"""Validation accuracy against CPU minutes, one curve per run, from runs' metrics.csv and the CPU
seconds per epoch measured for each network at 16 and at 32 px (benchmarks/epoch_benchmark.py):

    python -m benchmarks.cpu_curves --out docs/shapes.png \\
        --run "a_dilatednet=RUN/metrics.csv:25.0:57.6" --run "f_deep8=RUN/metrics.csv:27.0:53.1"

It also prints, for each run, the CPU minutes to the first epoch at --reach validation accuracies
(85, 87, 89 by default). An epoch at another image size (progressive resizing) is costed between the
two figures in proportion to its pixel count. The runs may have trained anywhere (a GPU, another CPU): the x axis is
what each epoch costs on the CPU the seconds were measured on, so curves compare at equal CPU time.
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
    """'name=path:s16:s32' -> (name, path, s16, s32)."""
    name, sep, rest = text.partition("=")
    path, *costs = rest.rsplit(":", 2)
    if not sep or len(costs) != 2:
        raise UserError(f"--run {text!r}: expected NAME=METRICS_CSV:S_PER_EPOCH_16PX:S_PER_EPOCH_32PX")
    return name, path, float(costs[0]), float(costs[1])


def epoch_cost(size, s16, s32):
    """CPU seconds of an epoch at `size` px, between the 16 and 32 px figures by pixel count."""
    return s16 + (s32 - s16) * (size**2 - 16**2) / (32**2 - 16**2)


def curve(path, s16, s32):
    """(CPU minutes at the end of each epoch, validation accuracy of that epoch)."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise UserError(f"{path}: cannot read the metrics ({e.strerror})") from None
    minutes, accuracy, total = [], [], 0.0
    for row in rows:
        total += epoch_cost(int(float(row.get("image_size") or 32)), s16, s32) / 60
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
    print(f"CPU minutes ({args.cpu}) to a validation accuracy of " + ", ".join(f"{t:g}%" for t in args.reach))
    for name, path, s16, s32 in map(parse_run, args.run):
        minutes, accuracy = curve(path, s16, s32)
        reached = [time_to_reach(minutes, accuracy, t) for t in args.reach]
        shown = ["never" if r is None else f"{r[0]:.0f} min (epoch {r[1]})" for r in reached]
        print(
            f"  {name}: "
            + ", ".join(f"{t:g}%: {s}" for t, s in zip(args.reach, shown))
            + f"; {minutes[-1]:.0f} min in all"
        )
        ax.plot(minutes, accuracy, marker=".", label=f"{name} ({len(minutes)} epochs, final {accuracy[-1]:.2f}%)")
    ax.set_xlabel(f"CPU minutes ({args.cpu})")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_ylim(args.ymin, None)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(args.title, fontsize=10)
    fig.tight_layout()
    _save(fig, args.out)
    print(f"wrote {args.out}")


def cli(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, help="NAME=METRICS_CSV:S16:S32 (repeat)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--cpu", default="2 cores", help="the CPU the seconds were measured on, for the axis")
    parser.add_argument("--title", default="Validation accuracy at equal CPU time")
    parser.add_argument("--ymin", type=float, default=40)
    parser.add_argument("--reach", type=float, nargs="*", default=[85, 87, 89], help="accuracies to time (percent)")
    return run_main(main, parser.parse_args(argv), single_process="cpu_curves.py")


if __name__ == "__main__":
    sys.exit(cli())
