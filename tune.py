"""Search a recipe with Optuna:  python tune.py -c config.json --space tune_space.json --trials 20

Each trial trains the config with values drawn from the search space (same Trainer as train.py) and
is judged by its final-epoch validation accuracy; poor trials are pruned after any epoch. The study
lives in a database: by default a SQLite file `<save_dir>/<study>/study.db`; give several machines
the same `--storage postgresql://...` and `--study` to search together. Results land in
`<save_dir>/<study>/`: trials.csv, best_config.json, history.png, importances.png, slice.png."""

import startup  # noqa: F401  (first: a Ctrl-C while the modules below load is one line, not a traceback)

# isort: split
import logging
import os
import sys

import optuna

from config.overrides import add_override_flags, overrides_from_args
from config.parser import ConfigParser
from config.reading import load_config
from logger import setup_logging
from train import main as train_main
from tuning.results import format_table, write_results
from tuning.space import load_space
from tuning.study import bind_study, log, make_objective, open_storage, open_study, run_worker, shown, study_dir
from utils.cli import run_main
from utils.errors import ConfigError, UserError


def hide_user_error_tracebacks(record):
    """Optuna logs a failed trial's exception with its traceback; for a mistake in the input (a
    UserError, printed as one line when tune.py stops) and for Ctrl-C or SIGTERM (a KeyboardInterrupt:
    the stop is said once, on stderr) the traceback is left out, and a stop is not reported twice."""
    if record.exc_info and isinstance(record.exc_info[1], UserError):
        record.exc_info, record.exc_text = None, None
    elif record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt):
        return False
    return True


def main(args):
    setup_logging(None, 1)
    route_optuna_logs()
    user_config = load_config(args.config)
    if not isinstance(user_config, dict):
        raise ConfigError(f"{args.config}: expected a JSON object")
    base = ConfigParser(user_config, modification=overrides_from_args(args)).config
    if base["data_loader"]["args"].get("validation_split", 0) == 0:
        raise ConfigError(
            "data_loader.args.validation_split: is 0, so trials would be judged on the test split; "
            "tune on a validation split carved from train (e.g. --validation_split 2000)"
        )
    if args.trials < 1:
        raise ConfigError(f"--trials: expected an integer >= 1, got {args.trials}")
    if args.heartbeat < 1:
        raise ConfigError(f"--heartbeat: expected a number of seconds >= 1, got {args.heartbeat}")
    space = load_space(args.space, base)
    # the data is read (and kept for the trials) before any study exists: a wrong data_dir is one line
    # and leaves no study.db behind
    ConfigParser(base).init_obj("data_loader")
    name = args.study or f"{base['name']}-search"
    out_dir = study_dir(base["trainer"]["save_dir"], name)
    url = args.storage or f"sqlite:///{out_dir / 'study.db'}"
    study = open_study(name, open_storage(url, args.heartbeat), space)
    bind_study(study, name, base, space)
    log.info(
        f"Study {name!r} in {shown(url)}: {len(space.params)} parameters, {args.trials} trials in all "
        f"(shared with every worker on this storage); results in {out_dir}/"
    )
    run_worker(study, make_objective(base, space, out_dir / "trials", args.trials, train_main), args.trials, url)
    setup_logging(None, 1)
    rows, found, plots = write_results(study, space, user_config, out_dir, args.config, base)
    log.info(format_table(rows, space))
    if found is not None:
        say_best(*found, base, out_dir)
    log.info(f"Wrote {out_dir / 'trials.csv'}" + (f" and {', '.join(plots)}" if plots else ""))


def route_optuna_logs():
    """Optuna's lines go through this project's logging (to stdout), without tracebacks of user errors."""
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    for name in [n for n in logging.root.manager.loggerDict if n.startswith("optuna")]:
        logging.getLogger(name).addFilter(hide_user_error_tracebacks)  # a logger's filter misses its children


def say_best(best, config, base, out_dir):
    """The best trial, the command that trains its config, and a warning when it learnt nothing."""
    data = config["data_loader"]["args"]
    log.info(
        f"Best: trial {best.number}, val_accuracy {best.value:.2f} "
        f"-> {out_dir / 'best_config.json'} (python train.py -c {out_dir / 'best_config.json'}: "
        f"{config['trainer']['epochs']} epochs on all the training images of {data.get('data_dir')} less "
        f"validation_split {data.get('validation_split')}; the trials ran {base['trainer']['epochs']})"
    )
    chance = 100.0 / base["arch"]["args"].get("num_classes", 10)
    if best.value <= chance + 2.0:
        log.warning(
            f"note: the best trial ({best.value:.2f}%) is no better than chance ({chance:.2f}%): the trials "
            "learnt nothing yet; lengthen them (--epochs, --train_subset) before trusting best_config.json"
        )


def cli(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description="Search training recipes with Optuna")
    parser.add_argument("-c", "--config", required=True, help="base config file")
    parser.add_argument("--space", required=True, help="search space JSON (key paths -> distributions)")
    parser.add_argument("--trials", type=int, default=20, help="trials in all, across every worker of the study")
    parser.add_argument(
        "--storage",
        default=os.environ.get("TUNE_STORAGE"),
        help="optuna storage URL (default: $TUNE_STORAGE, else sqlite:///<save_dir>/<study>/study.db); a "
        "PostgreSQL password can stay out of it (libpq's PGPASSWORD or ~/.pgpass)",
    )
    parser.add_argument("--study", default=None, help="study name (default: <config name>-search)")
    parser.add_argument(
        "--heartbeat",
        type=int,
        default=60,
        help="seconds between a running trial's heartbeats; a trial silent for two is failed and retried",
    )
    add_override_flags(parser)
    args = parser.parse_args(argv)
    return run_main(
        main,
        args,
        interrupted="interrupted: the running trial is marked failed; run the same command to go on",
        single_process="tune.py",
    )


if __name__ == "__main__":
    sys.exit(cli())
