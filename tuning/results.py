"""What a study leaves in its folder: trials.csv, best_config.json and three PNG plots."""

import csv
import io
import json
import logging
import os
import textwrap
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from config.reading import config_diff
from tuning.space import apply_values
from tuning.study import OBJECTIVE
from utils.paths import atomic_write

log = logging.getLogger("tune")


def _write_atomic(path, text):
    """Workers of one study may write at once: each writes a file of its own, then renames it."""
    with atomic_write(path) as tmp:
        tmp.write_text(text)


def trial_rows(study, space):
    params = list(space.params)
    rows = []
    for t in study.get_trials(deepcopy=False):
        last = t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None
        note = t.user_attrs.get("rejected") and f"rejected: {t.user_attrs['rejected']}"
        if t.user_attrs.get("surplus"):
            note = "surplus: not run (the budget was full when it was asked for)"
        if not note and t.state == TrialState.PRUNED and t.intermediate_values:
            note = f"pruned after epoch {max(t.intermediate_values)}"
        decoded = space.decode_params({p: v for p, v in t.params.items() if p in space.params})
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                OBJECTIVE: "" if t.value is None else f"{t.value:.2f}",
                "last_reported": "" if last is None else f"{last:.2f}",
                "epochs_run": len(t.intermediate_values),
                "duration_s": "" if t.duration is None else f"{t.duration.total_seconds():.1f}",
                **{
                    p: json.dumps(decoded[p]) if isinstance(decoded.get(p), list) else decoded.get(p, "")
                    for p in params
                },
                "note": note or "",
                "run_dir": t.user_attrs.get("run_dir", "") if Path(t.user_attrs.get("run_dir", "")).is_dir() else "",
            }
        )
    return rows


def write_csv(rows, path):
    if not rows:
        return
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    _write_atomic(path, out.getvalue())


STUDY_DATA_KEYS = ("data_dir", "validation_split", "split_seed")  # the study's data, kept by best_config.json


def write_best_config(study, space, user_config, path, config_path, study_config):
    """best_config.json: the config file the study started from (`config_path`, as read, before
    command-line overrides) as its "base", with the best trial's values and the study's data
    (data_dir, validation split) as its changes: ready for  python train.py -c <path>  at the
    file's full length, on all the training images. Returns (the best trial, the merged config)."""
    best = study.best_trial
    config = apply_values(user_config, space.decode_params(best.params), create=True)
    data = config["data_loader"].setdefault("args", {})
    data.update(
        {k: study_config["data_loader"]["args"][k] for k in STUDY_DATA_KEYS if k in study_config["data_loader"]["args"]}
    )
    data.pop("train_subset", None)
    base = os.path.relpath(Path(config_path).resolve(), Path(path).resolve().parent)
    _write_atomic(path, json.dumps({"base": base, **config_diff(user_config, config)}, indent=4) + "\n")
    return best, config


def plot_accuracy_per_param(study, space):
    """One panel per parameter: final accuracy of each complete trial (filled) and the last reported
    accuracy of each pruned one (hollow) against the parameter's value."""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib import ticker

    names = list(space.params)
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        dist = space.params[name]
        for state, style in (
            (TrialState.COMPLETE, dict(c="tab:blue")),
            (TrialState.PRUNED, dict(facecolors="none", edgecolors="tab:gray")),
        ):
            trials = [
                t for t in study.get_trials(deepcopy=False, states=(state,)) if name in t.params and t.value is not None
            ]
            if not trials:  # no empty legend entry for a state no trial is in
                continue
            xs = [t.params[name] for t in trials]
            if isinstance(dist, optuna.distributions.CategoricalDistribution):
                xs = [dist.choices.index(x) for x in xs]
            ax.scatter(xs, [t.value for t in trials], label=state.name.lower(), **style)
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            ax.set_xticks(np.arange(len(dist.choices)), [str(c) for c in dist.choices], rotation=20, fontsize=7)
        elif getattr(dist, "log", False):
            ax.set_xscale("log")  # labels at 1, 2, 3 and 5 of each decade: a short range's minor labels ran together
            ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel(name, fontsize=8)
        ax.set_ylabel(OBJECTIVE)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    if axes.flat[0].get_legend_handles_labels()[0]:
        axes.flat[0].legend(fontsize=7)
    return axes


FEW_TRIALS = 10  # below this many complete trials, importances say more about chance than about parameters


def importance_caveat(study):
    """A warning for importances measured on few complete trials (None: enough trials)."""
    n = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if n >= FEW_TRIALS:
        return None
    return f"from {n} complete trials only: a rough guide, not a ranking ({FEW_TRIALS}+ trials to trust it)"


def plot_importances(study, ovm):
    """optuna's parameter-importance plot, its title carrying the few-trials caveat when it applies."""
    ax = ovm.plot_param_importances(study, target_name=OBJECTIVE)
    caveat = importance_caveat(study)
    if caveat:  # the title and the caveat as one wrapped figure title: nothing cut, nothing overlapping
        title = ax.get_title(loc="left") or ax.get_title()
        ax.set_title("", loc="left")
        ax.set_title("")
        ax.figure.suptitle(f"{title}\n" + textwrap.fill(f"({caveat})", 90), fontsize=10)
        log.info(f"importances.png: {caveat}")
    return ax


def write_plots(study, space, out_dir):
    """Optimisation history, parameter importances (optuna's plots) and accuracy against each parameter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    from optuna.visualization import matplotlib as ovm

    def history():
        ax = ovm.plot_optimization_history(study, target_name=OBJECTIVE)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # trial numbers: whole ticks, even for 2 trials
        return ax

    plots = {
        "history.png": history,
        "importances.png": lambda: plot_importances(study, ovm),
        "slice.png": lambda: plot_accuracy_per_param(study, space),
    }
    written = []
    for name, plot in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                axes = plot()
        except (ValueError, RuntimeError, ZeroDivisionError) as e:  # e.g. importances need 2+ complete trials
            log.info(f"{name} skipped: {e}")
            continue
        fig = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
        if not hasattr(axes, "flat"):
            fig.set_size_inches(8, 4.8)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # optuna's axes are not all tight_layout-compatible
            fig.tight_layout(rect=(0, 0, 1, 0.9) if fig._suptitle is not None else None)
        with atomic_write(Path(out_dir) / name) as tmp:
            fig.savefig(tmp, dpi=100)
        plt.close(fig)
        written.append(name)
    return written


def write_results(study, space, user_config, out_dir, config_path, study_config):
    """trials.csv, best_config.json (write_best_config) and the plots; returns (rows, (best trial,
    its merged config) or None, plot names)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = trial_rows(study, space)
    write_csv(rows, out_dir / "trials.csv")
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best = (
        write_best_config(study, space, user_config, out_dir / "best_config.json", config_path, study_config)
        if complete
        else None
    )
    plots = write_plots(study, space, out_dir) if complete else []
    return rows, best, plots


def format_table(rows, space):
    """The trial table as Markdown (for the console and a report)."""
    keys = ["number", "state", OBJECTIVE, "epochs_run", "duration_s", *space.params, "note"]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        cells = [str(row.get(k, "")) for k in keys]
        cells = [
            f"{float(c):.4g}" if k in space.params and _is_float(c) and "." in c else c for k, c in zip(keys, cells)
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _is_float(text):
    try:
        float(text)
        return True
    except ValueError:
        return False
