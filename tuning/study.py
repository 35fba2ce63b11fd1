"""Optuna studies: where they are stored, what a trial does, and one worker's loop.

A trial is the base config with sampled values, trained by train.py's `main` (make_objective is
given it) in its own run folder `<study dir>/trials/<name>/trialNNNN/`. Its objective is the
final-epoch plain validation accuracy; every epoch's accuracy is reported to the pruner. A sampled
network that breaks the `constraints` section is rejected before any data is loaded.
"""

import logging
import random
import re
import threading
import time
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from checkpoint.provenance import hide_passwords
from logger.keys import val_key
from tuning.space import apply_values
from utils.errors import ConfigError

OBJECTIVE = val_key("accuracy")
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
log = logging.getLogger("tune")


def study_dir(save_dir, study_name):
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", study_name):
        raise ConfigError(f"--study: {study_name!r} is not a plain folder name (letters, digits, '.', '_', '-')")
    return Path(save_dir).expanduser() / study_name


def shown(url):
    """The storage URL as it may be printed: a password in it is replaced by ***."""
    return hide_passwords(url)


CONNECT_TIMEOUT = 20  # seconds for a database server to answer a new connection


def open_storage(url, heartbeat, attempts=5):
    """An optuna RDBStorage with a heartbeat: a trial whose worker died (kill -9, power cut) is marked
    failed after 2 heartbeats without news and then retried once by another worker."""
    engine_kwargs = {}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 120}}
    elif url.startswith("postgresql"):  # a server that never answers: an error after this, not a hang
        engine_kwargs = {"connect_args": {"connect_timeout": CONNECT_TIMEOUT}}
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat,
                grace_period=2 * heartbeat,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
            )
        except Exception as e:  # sqlalchemy/driver errors differ by backend; all mean "cannot open this URL"
            # workers creating the tables of one new database at once: the losers of the race get
            # SQLite's IntegrityError / OperationalError, PostgreSQL's ProgrammingError "relation ...
            # already exists" or IntegrityError on pg_type; a moment later the tables are there
            racing = (
                type(e).__name__ == "IntegrityError"
                or (type(e).__name__ == "OperationalError" and url.startswith("sqlite"))
                or "already exists" in str(e)
            )
            if attempt + 1 < attempts and racing:
                time.sleep(0.5 + random.random())
                continue
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(
                f"--storage {shown(url)}: cannot open the study storage ({type(e).__name__}: {reason[:160]})"
            ) from None


def open_study(name, storage, space, attempts=5):
    for attempt in range(attempts):
        try:
            return optuna.create_study(
                study_name=name,
                storage=storage,
                load_if_exists=True,
                direction="maximize",
                sampler=space.build_sampler(),
                pruner=space.build_pruner(),
            )
        except optuna.exceptions.DuplicatedStudyError:  # another worker created it this instant: load it
            if attempt + 1 == attempts:
                raise
            time.sleep(0.2)
        except ValueError as e:  # e.g. an existing study of the same name that minimises
            raise ConfigError(f"--study {name}: {e}") from None


def bind_study(study, name, base_config, space):
    """A study keeps the config (command-line overrides applied) and search space its first worker
    started it with; a later worker whose config differs in what is trained (anything but where
    files go and how much is printed), in its epochs or in its space is refused in one line, so that
    trials of different recipes are never ranked together."""
    from checkpoint.resume import config_changes, show_changes

    space_json = {key: optuna.distributions.distribution_to_json(d) for key, d in space.params.items()}
    mine = {"config": base_config, "space": space_json}
    first = study.user_attrs.get("recipe")
    if first is None:
        study.set_user_attr("recipe", mine)
        return
    changes = [c for c in config_changes(first["config"], base_config) if c[0] not in space.params]
    was_epochs, epochs = first["config"]["trainer"]["epochs"], base_config["trainer"]["epochs"]
    if was_epochs != epochs:
        changes.insert(0, ("trainer.epochs", was_epochs, epochs))
    if changes:
        raise ConfigError(
            f"--study {name}: its trials were trained with another config ({show_changes(changes)}); run this "
            "worker with the same config and overrides, or start a new study (--study)"
        )
    if first["space"] != space_json:
        odd = sorted(k for k in first["space"].keys() | space_json.keys() if first["space"].get(k) != space_json.get(k))
        raise ConfigError(
            f"--study {name}: its trials were sampled from another search space ({', '.join(odd[:3])} differ); "
            "use the same --space, or start a new study (--study)"
        )


def pruning_callback(trial, epochs):
    """A Trainer epoch callback: report the epoch's validation accuracy and stop a poor trial (never
    after its last epoch, when it is as good as finished)."""

    def callback(epoch, epoch_log):
        if OBJECTIVE not in epoch_log:
            raise ConfigError(f'metrics: tuning needs {OBJECTIVE!r} in the epoch log; add "accuracy" to metrics')
        trial.report(epoch_log[OBJECTIVE], epoch)
        if epoch < epochs and trial.should_prune():
            logging.getLogger("trainer").info(
                f"Trial {trial.number} pruned after epoch {epoch} ({OBJECTIVE} {epoch_log[OBJECTIVE]:.2f})"
            )
            raise optuna.TrialPruned(f"pruned after epoch {epoch}")

    return callback


class SurplusTrial(Exception):
    """Raised (and caught) when other workers filled the study's budget while this trial was created."""


def make_objective(base_config, space, trials_dir, n_trials, train_main):
    """base_config: the validated config dict (command-line overrides applied); train_main: train.py's
    `main`, which trains each trial as train.py would."""
    from checkpoint.saver import RunFiles
    from config.parser import ConfigParser
    from model.spec import describe, format_checks

    def objective(trial):
        # Trial numbers are handed out atomically by the storage: a trial with n_trials counted ones
        # before it is one too many (two workers asked at once); it fails at once, before sampling.
        ahead = [t for t in counted(trial.study) if t.number < trial.number]
        if len(ahead) >= n_trials:
            trial.set_user_attr("surplus", True)
            raise SurplusTrial(f"trial {trial.number} not run: the study already holds {n_trials} trials")
        values = space.suggest(trial)
        config = apply_values(base_config, values)
        config["trainer"].update(save_dir=str(trials_dir), report=False)
        if ahead:  # the layer summary (verbosity 2) once per study; each trial keeps its one-line verdict
            config["trainer"]["verbosity"] = min(1, config["trainer"]["verbosity"])
        parsed = ConfigParser(config)
        files = RunFiles.of(parsed, run_id=f"trial{trial.number:04d}")
        trial.set_user_attr("run_dir", str(files.run_dir))
        trial.set_user_attr("values", values)  # as written into the config (lists stay lists)
        _, failed = describe(
            parsed.init_obj("arch"),
            parsed["constraints"],
            augmentations=parsed["data_loader"]["args"].get("augmentations"),
        )
        if failed and (parsed["constraints"] or {}).get("enforce"):
            reason = "; ".join(re.sub(r"\s+", " ", line).strip() for line in format_checks(failed).splitlines())
            trial.set_user_attr("rejected", reason)
            log.info(f"Trial {trial.number} rejected before training: {reason}")
            raise optuna.TrialPruned(reason)
        log.info(f"Trial {trial.number} ({trial_progress(ahead, n_trials)}): {values}")

        # a Ctrl-C goes on to optuna (which marks the trial failed) and tune.py, which says how to go on
        def record_folder(epoch, log):  # the folder the run claimed: trial0000_2 where trial0000 was taken
            if epoch == 1 and str(files.run_dir) != trial.user_attrs.get("run_dir"):
                trial.set_user_attr("run_dir", str(files.run_dir))

        callbacks = [record_folder, pruning_callback(trial, parsed["trainer"]["epochs"])]
        history = train_main(parsed, epoch_callbacks=callbacks, resume_hint=False, files=files)
        return history[-1][OBJECTIVE]

    return objective


def trial_progress(ahead, n_trials):
    """Where a trial stands in the study: "k of n", and the time the trials left would take at the
    mean pace of the finished ones (pruned ones are shorter, so it is an upper guess)."""
    from trainer.progress import clock

    text = f"{len(ahead) + 1} of {n_trials}"
    durations = [t.duration.total_seconds() for t in ahead if t.state.is_finished() and t.duration]
    if durations:
        text += f", about {clock(sum(durations) / len(durations) * (n_trials - len(ahead)))} left for the study"
    return text


def counted(study):
    """Trials that count towards --trials: complete, pruned, running or queued; not failed ones and
    not those rejected by the constraints (which cost nothing)."""
    return [t for t in study.get_trials(deepcopy=False, states=COUNTED) if "rejected" not in t.user_attrs]


def storage_lost(error):
    """The error in `error`'s chain (itself, or one it was raised while handling) that says the
    storage stopped answering (a database server stopped or unreachable mid-study), or None."""
    import sqlalchemy.exc

    lost = None
    while error is not None:
        if isinstance(error, (optuna.exceptions.StorageInternalError, sqlalchemy.exc.OperationalError)):
            lost = error  # keep going: the driver's own error, deepest in the chain, says most
        error = error.__cause__ or error.__context__
    return lost


def _thread_excepthook(args):
    """Optuna's heartbeat thread dies with a traceback when the storage is lost; the main thread says
    so in one line (run_worker), so that thread's traceback is left out. Other errors print as usual."""
    if storage_lost(args.exc_value) is None:
        threading.__excepthook__(args)


def run_worker(study, objective, n_trials, url="the storage"):
    """Run trials until the study holds `n_trials` counted ones (see `counted`). Several workers on
    one storage share the count (a trial asked for when the budget was already full is failed
    as surplus before it samples or trains anything)."""
    done, rejected = 0, 0
    threading.excepthook = _thread_excepthook
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        while True:
            optuna.storages.fail_stale_trials(study)  # a dead worker's trial: failed, and queued again
            waiting = study.get_trials(
                deepcopy=False, states=(TrialState.WAITING,)
            )  # e.g. retries of dead workers' trials
            if len(counted(study)) >= n_trials and not waiting:
                break
            try:
                study.optimize(objective, n_trials=1, gc_after_trial=True, catch=(SurplusTrial,))
            except Exception as e:
                lost = storage_lost(e)
                if lost is None:
                    raise
                reason = str(lost).strip().splitlines()[0][:100] if str(lost).strip() else ""
                raise ConfigError(
                    f"--storage {shown(url)}: lost the study storage mid-study ({type(lost).__name__}: {reason}); "
                    "the trials finished before are kept there: once it answers again, the same command continues "
                    "the study"
                ) from None
            done += 1
            rejected += "rejected" in study.trials[-1].user_attrs
            if rejected >= 10 * n_trials:
                raise ConfigError(
                    f"--space: {rejected} sampled networks broke the constraints; narrow the search space"
                )
    return done
