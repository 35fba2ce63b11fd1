"""tune.py (Optuna search) and lr_find.py on tiny generated data."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import optuna
import pytest
import sqlalchemy

from config.parser import ConfigParser
from config.reading import load_config
from conftest import REPO, assert_one_line_error, png_ok, run_cli, tiny_config
from trainer.lr_finder import suggest_lr
from tuning.space import apply_values, load_space
from utils.errors import ConfigError

SPACE = {
    "params": {
        "optimizer.args.lr": {"type": "float", "low": 0.05, "high": 0.3, "log": True},
        "data_loader.args.augmentations.CoarseDropout.p": {"type": "float", "low": 0.1, "high": 0.5, "step": 0.1},
        "arch.args.widths": {"type": "categorical", "choices": [[64, 64, 144, 144], [48, 64, 144, 160]]},
    },
    "pruner": {"type": "MedianPruner", "args": {"n_startup_trials": 1}},
}
TOO_BIG = [64, 64, 160, 160]  # 115,578 parameters


def write_json(path, value):
    path.write_text(json.dumps(value))
    return path


def tune_args(tmp_path, data_dir, space, *extra, trials=2, epochs=2):
    config = tiny_config(tmp_path, data_dir)
    space_file = write_json(tmp_path / "space.json", space)
    return [
        "tune.py",
        "-c",
        config,
        "--space",
        space_file,
        "--trials",
        trials,
        "--epochs",
        epochs,
        "--validation_split",
        10,
        *extra,
    ]


def heartbeats(url):
    """How many trials of the study storage at `url` have a heartbeat on record: optuna fails only
    those as stale."""
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as db:
            return db.execute(sqlalchemy.text("SELECT COUNT(*) FROM trial_heartbeats")).scalar()
    finally:
        engine.dispose()


def study_url(tmp_path, study="Cifar10_DilatedNet-search"):
    return f"sqlite:///{tmp_path / 'saved' / study / 'study.db'}"


def load(tmp_path, study="Cifar10_DilatedNet-search"):
    return optuna.load_study(study_name=study, storage=study_url(tmp_path, study))


@pytest.mark.parametrize(
    "params, fragment",
    [
        (
            {"optimizer.args.lrr": {"type": "float", "low": 0.1, "high": 0.2}},
            "optimizer.args.lrr: unknown argument of SGD",
        ),
        ({"trainer.epoch": {"type": "int", "low": 1, "high": 3}}, "trainer.epoch: no such key"),
        (
            {"data_loader.args.augmentations.Cutout.p": {"type": "float", "low": 0.1, "high": 0.2}},
            "no entry of type 'Cutout'",
        ),
        ({"optimizer.args.lr": {"type": "gauss", "low": 0.1, "high": 0.2}}, 'expected {"type": "float"'),
        ({"optimizer.args.lr": {"type": "float", "low": 0.3, "high": 0.2}}, "low <= high"),
        ({"optimizer.args.lr": {"type": "float", "low": "0.05", "high": 0.2}}, 'lr.low: expected a number, got "0.05"'),
        ({"optimizer.args.lr": {"type": "float", "low": 0.1, "high": 0.2, "lg": True}}, "unknown key 'lg'"),
        (
            {"data_loader.args.augmentations.CoarseDropout.p": {"type": "float", "low": 0.5, "high": 1.5}},
            "less than or equal to 1",
        ),
        ({"arch.args.widths": {"type": "categorical", "choices": [[64, 64]]}}, "need 4 entries"),
        ({"trainer.amp": {"type": "categorical", "choices": ["off", "fp8"]}}, 'with the value "fp8"'),
    ],
)
def test_space_errors_name_file_and_key(tmp_path, params, fragment):
    path = write_json(tmp_path / "space.json", {"params": params})
    with pytest.raises(ConfigError) as err:
        load_space(path, load_config(REPO / "config.json"))
    message = str(err.value)
    assert message.startswith(f"{path}: params.{next(iter(params))}") and fragment in message, message
    assert "\n" not in message


def test_space_top_level_keys_are_checked(tmp_path):
    base = load_config(REPO / "config.json")
    with pytest.raises(ConfigError, match="sampelr: unknown key"):
        load_space(write_json(tmp_path / "a.json", {"params": SPACE["params"], "sampelr": {}}), base)
    with pytest.raises(ConfigError, match="pruner.type: 'Median' is not found in optuna.pruners"):
        load_space(write_json(tmp_path / "b.json", {"params": SPACE["params"], "pruner": {"type": "Median"}}), base)
    with pytest.raises(ConfigError, match="pruner.args.n_startup: unknown argument of MedianPruner"):
        load_space(
            write_json(tmp_path / "c.json", {**SPACE, "pruner": {"type": "MedianPruner", "args": {"n_startup": 1}}}),
            base,
        )


def test_values_land_at_their_key_paths():
    base = load_config(REPO / "config.json")
    config = apply_values(
        base,
        {
            "optimizer.args.lr": 0.2,
            "data_loader.args.augmentations.CoarseDropout.p": 0.4,
            "arch.args.widths": [48, 64, 144, 160],
            "optimizer.args.dampening": 0.0,
        },
    )
    parsed = ConfigParser(config)
    assert parsed["optimizer"]["args"]["lr"] == 0.2 and parsed["optimizer"]["args"]["dampening"] == 0.0
    assert parsed["data_loader"]["args"]["augmentations"][2]["args"]["p"] == 0.4
    assert parsed["arch"]["args"]["widths"] == [48, 64, 144, 160]
    assert base["optimizer"]["args"]["lr"] == 0.15  # the base config is left as it was


def test_tune_end_to_end(tmp_path, tiny_folder):
    proc = run_cli(*tune_args(tmp_path, tiny_folder, SPACE, trials=3))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "saved" / "Cifar10_DilatedNet-search"
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [r["state"] for r in rows].count("COMPLETE") >= 1 and len(rows) == 3
    assert all(r["run_dir"] == "" or (REPO / r["run_dir"]).is_dir() for r in rows)  # folders that exist
    study = load(tmp_path)
    # 2 epochs on 40 images: a best trial at chance level is said to be one
    assert ("is no better than chance" in proc.stdout) == (study.best_value <= 10.0 + 2.0)
    for trial in study.trials:
        run_config = load_config(trial.user_attrs["run_dir"] + "/config.json")  # the trial trained what it sampled
        assert run_config["optimizer"]["args"]["lr"] == trial.params["optimizer.args.lr"]
        assert run_config["arch"]["args"]["widths"] == json.loads(trial.params["arch.args.widths"])
        if trial.state == optuna.trial.TrialState.COMPLETE:  # objective = final-epoch plain val accuracy
            history = trial.intermediate_values
            assert trial.value == history[max(history)] and max(history) == 2
    written = json.loads((out / "best_config.json").read_text())  # the study's config as its base, and the changes
    assert (out / written["base"]).resolve() == (tmp_path / "config.json").resolve() and "trainer" not in written
    best = load_config(out / "best_config.json")
    assert best["trainer"]["epochs"] == 2 and best["trainer"]["save_dir"] == str(tmp_path / "saved")  # the config given
    assert "epochs on all the training images of" in proc.stdout
    assert best["optimizer"]["args"]["lr"] == study.best_trial.params["optimizer.args.lr"]
    ConfigParser(best)
    for name in ("history.png", "importances.png", "slice.png"):
        assert png_ok(out / name)
    assert "(1 of 3): {" in proc.stdout and re.search(r"\(3 of 3, about \d+:\d\d left for the study\): \{", proc.stdout)
    complete = [r["state"] for r in rows].count("COMPLETE")  # importances from 3 trials carry a caveat
    assert f"importances.png: from {complete} complete trials only: a rough guide" in proc.stdout + proc.stderr
    assert "| number | state | val_accuracy" in proc.stdout and "Best: trial" in proc.stdout


def test_constraint_breakers_are_rejected_before_any_training(tmp_path, tiny_folder):
    space = {"params": {"arch.args.widths": {"type": "categorical", "choices": [TOO_BIG]}}}
    proc = run_cli(*tune_args(tmp_path, tiny_folder, space, trials=1))
    assert_one_line_error(proc, "--space: 10 sampled networks broke the constraints")
    trials = load(tmp_path).trials
    assert len(trials) == 10 and all(
        t.state.name == "PRUNED" and "max_params" in t.user_attrs["rejected"] for t in trials
    )
    assert not (tmp_path / "saved" / "Cifar10_DilatedNet-search" / "trials").exists()  # no trial trained


def test_bad_storage_url_is_one_line(tmp_path, tiny_folder):
    proc = run_cli(*tune_args(tmp_path, tiny_folder, SPACE, "--storage", "nosuchdb://x/y"))
    assert_one_line_error(proc, "--storage nosuchdb://x/y: cannot open the study storage")
    proc = run_cli(*tune_args(tmp_path, tiny_folder, SPACE, "--study", "../escape"))
    assert_one_line_error(proc, "--study: '../escape' is not a plain folder name")


def test_two_workers_share_one_sqlite_study(tmp_path, tiny_folder):
    args = [sys.executable, *map(str, tune_args(tmp_path, tiny_folder, SPACE, trials=3))]
    workers = [
        subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outputs = [w.communicate(timeout=300) for w in workers]
    assert all(w.returncode == 0 for w in workers), [o[1][-2000:] for o in outputs]
    trials = load(tmp_path).trials
    run = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(run) == 3  # in all, across both workers
    assert len({t.number for t in run}) == 3 and len({t.user_attrs["run_dir"] for t in run}) == 3
    assert all(t.user_attrs.get("surplus") for t in trials if t not in run)  # any extra: failed before sampling
    for t in run:
        assert (REPO / t.user_attrs["run_dir"] / "config.json").is_file()
    assert all("Best: trial" in o[0] for o in outputs)


def test_killed_worker_leaves_a_readable_study_and_the_trial_is_retried(tmp_path, tiny_folder):
    args = [sys.executable, *map(str, tune_args(tmp_path, tiny_folder, SPACE, "--heartbeat", 1, trials=1, epochs=16))]
    worker = subprocess.Popen(
        args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 120
    try:
        while time.time() < deadline:  # mid-trial: its run folder has a checkpoint
            time.sleep(0.5)
            try:
                running = [t for t in load(tmp_path).trials if t.state.name == "RUNNING" and "run_dir" in t.user_attrs]
            except Exception:  # the first worker may not have created the study (or its tables) yet
                continue
            saved = running and (REPO / running[0].user_attrs["run_dir"] / "last.pth").exists()
            if saved and heartbeats(study_url(tmp_path)):
                break
        else:
            pytest.fail("the first worker never got mid-trial")
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
    killed = load(tmp_path).trials[0]  # readable after kill -9
    assert killed.state.name == "RUNNING"
    time.sleep(3.5)  # two missed heartbeats, stored to the second
    proc = run_cli(*tune_args(tmp_path, tiny_folder, SPACE, "--heartbeat", 1, trials=1, epochs=16))  # the same recipe
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = load(tmp_path).trials
    assert trials[0].state.name == "FAIL"
    retried = [t for t in trials[1:] if t.state.name == "COMPLETE"]
    assert len(retried) == 1 and retried[0].params == killed.params


def test_suggest_lr_on_a_known_curve():
    lrs = list(np.geomspace(1e-4, 10, 80))
    losses = [2.3 - 0.5 * np.tanh(2 * (np.log10(lr) + 2)) + 0.4 * max(0.0, np.log10(lr)) ** 2 for lr in lrs]
    s = suggest_lr(lrs, losses)
    assert 0.5 < s["minimum"] < 2.0 and s["peak"] == s["minimum"]
    assert 0.005 < s["steepest"] < 0.02  # the tanh's steepest point, lr 0.01


def test_lr_find_writes_plot_and_suggestion(tmp_path, tiny_folder):
    config = tiny_config(tmp_path, tiny_folder)
    proc = run_cli("lr_find.py", "-c", config, "--steps", 30, "--out", tmp_path / "lr.png")
    assert proc.returncode == 0, proc.stderr
    assert "Suggested OneCycle peak (optimizer.args.lr):" in proc.stdout
    assert png_ok(tmp_path / "lr.png")
    assert_one_line_error(run_cli("lr_find.py", "-c", config, "--steps", 3), "--steps: expected at least 10")


def test_data_mistakes_are_one_line_without_optuna_tracebacks(tmp_path, tiny_folder):
    proc = run_cli(*tune_args(tmp_path, tmp_path / "nowhere", SPACE))
    assert_one_line_error(proc, "nowhere: no CIFAR-10 here")
    assert not (tmp_path / "saved").exists()  # read before the study: no study.db left behind
    proc = run_cli(*tune_args(tmp_path, tiny_folder, SPACE, "--bs", 100))
    assert_one_line_error(proc, "data_loader.args.batch_size: 100 is more than the 30 training images")
    assert "Traceback" not in proc.stdout


def test_a_storage_password_is_never_printed():
    from tuning.study import shown

    assert shown("postgresql://optuna:s3cret@db-host:5432/optuna") == "postgresql://optuna:***@db-host:5432/optuna"
    assert shown("postgresql://postgres@127.0.0.1:5432/postgres") == "postgresql://postgres@127.0.0.1:5432/postgres"
    assert shown("sqlite:///saved/study/study.db") == "sqlite:///saved/study/study.db"


def test_ctrl_c_in_a_trial_marks_it_failed_and_says_how_the_study_goes_on(tmp_path, tiny_folder, monkeypatch):
    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr("trainer.trainer.Trainer.train", interrupted)
    proc = run_cli(*tune_args(tmp_path, tiny_folder, SPACE, trials=2))
    assert proc.returncode == 130 and "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert "KeyboardInterrupt" not in proc.stdout  # optuna's "Trial 0 failed" traceback stays out of stdout too
    assert "the running trial is marked failed; run the same command to go on" in proc.stderr
    assert "python train.py --resume" not in proc.stdout + proc.stderr  # not the trainer's hint
    assert [t.state.name for t in load(tmp_path).trials] == ["FAIL"]


def test_a_worker_with_another_config_or_space_is_refused_by_the_study(tmp_path, tiny_folder):
    assert run_cli(*tune_args(tmp_path, tiny_folder, SPACE, trials=1)).returncode == 0
    momentum = ("--set", "optimizer.args.momentum=0.8")
    other = run_cli(*tune_args(tmp_path, tiny_folder, SPACE, *momentum, trials=2, epochs=3))
    changes = "trainer.epochs: 2 -> 3; optimizer.args.momentum: 0.9 -> 0.8"
    assert_one_line_error(other, f"its trials were trained with another config ({changes})")
    lr = {"type": "float", "low": 0.1, "high": 0.2}
    narrower = {**SPACE, "params": {**SPACE["params"], "optimizer.args.lr": lr}}
    assert_one_line_error(run_cli(*tune_args(tmp_path, tiny_folder, narrower, trials=2)), "optimizer.args.lr differ")
    assert len(load(tmp_path).trials) == 1  # nothing was trained by the refused workers


def test_a_database_server_that_never_answers_is_one_line_not_a_hang(tmp_path, tiny_folder, monkeypatch):
    import socket

    monkeypatch.setattr("tuning.study.CONNECT_TIMEOUT", 2)
    with socket.socket() as silent:  # accepts connections and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"postgresql://user:secret@127.0.0.1:{silent.getsockname()[1]}/db"
        start = time.perf_counter()
        proc = run_cli(*tune_args(tmp_path, tiny_folder, SPACE, "--storage", url))
    line = assert_one_line_error(proc, "--storage postgresql://user:***@127.0.0.1", "cannot open the study")
    assert time.perf_counter() - start < 30 and "secret" not in proc.stdout + proc.stderr, line
    assert "marked failed" not in proc.stdout + proc.stderr


def test_the_shipped_search_space_offers_only_networks_within_the_spec():
    """A choice that always breaks the constraints would waste every trial that draws it."""
    from model.spec import check_constraints

    space = json.loads((REPO / "tune_space.json").read_text())["params"]
    config = ConfigParser(json.loads((REPO / "config.json").read_text()))
    for key, spec in space.items():
        if not key.startswith("arch.args."):
            continue
        for choice in spec["choices"]:
            args = {**config["arch"]["args"], key.rsplit(".", 1)[1]: choice}
            model = config.obj_type("arch")(**args)
            failed = [c.rule for c in check_constraints(model, config["constraints"]) if not c.ok]
            assert failed == [], (key, choice, failed)


def test_passwords_stay_out_of_what_the_project_prints_and_writes(monkeypatch):
    import torch

    from checkpoint.provenance import hide_passwords, provenance

    for url, shown_as in [
        ("postgresql://optuna:S3cretPW@127.0.0.1:55432/optuna", "postgresql://optuna:***@127.0.0.1:55432/optuna"),
        ("postgresql://u:p@ss@db-host/x", "postgresql://u:***@db-host/x"),  # an @ in the password
        ("sqlite:///saved/study.db", "sqlite:///saved/study.db"),
        (
            "postgresql://slashy:ab/Sekr1tSlash@127.0.0.1:55432/optuna2",
            "postgresql://slashy:***@127.0.0.1:55432/optuna2",
        ),
        ("postgresql://u@h/db?sslmode=require&password=Sekr1t", "postgresql://u@h/db?sslmode=require&password=***"),
        (
            "--storage postgresql://a:b@h/x?PASSWORD=c --seed 1",
            "--storage postgresql://a:***@h/x?PASSWORD=*** --seed 1",
        ),
    ]:
        assert hide_passwords(url) == shown_as
    monkeypatch.setattr(sys, "argv", ["tune.py", "--storage", "postgresql://optuna:S3cretPW@h/db"])
    assert "S3cretPW" not in json.dumps(provenance(torch.device("cpu")))


def test_suggest_lr_works_at_the_documented_minimum_of_10_steps():
    lrs = list(np.geomspace(1e-4, 1, 10))
    losses = [2.3, 2.2, 2.0, 1.8, 1.5, 1.3, 1.2, 1.4, 2.0, 3.0]
    assert suggest_lr(lrs, losses)["minimum"] == pytest.approx(lrs[6])


def test_best_config_writes_a_key_the_users_file_leaves_to_the_defaults():
    """A searched key the config file does not hold (trainer.ema: the schema's default null) is written
    into best_config.json's values instead of failing after every trial has trained."""
    user = load_config(REPO / "config.json")
    assert "ema" not in user["trainer"]
    with pytest.raises(ConfigError, match="trainer.ema: no such key"):
        apply_values(user, {"trainer.ema": {"decay": 0.9}})
    assert apply_values(user, {"trainer.ema": {"decay": 0.9}}, create=True)["trainer"]["ema"] == {"decay": 0.9}


def test_an_enumerating_sampler_over_a_continuous_float_is_one_line_before_the_study(tmp_path, tiny_folder):
    space = {**SPACE, "sampler": {"type": "BruteForceSampler", "args": {}}}
    proc = run_cli(*tune_args(tmp_path, tiny_folder, space, trials=1))
    assert_one_line_error(proc, "BruteForceSampler enumerates every value, so a float needs a step")
    assert not list(tmp_path.glob("saved/*/study.db"))


def test_a_trial_records_the_folder_it_really_trained_in(tmp_path, tiny_folder):
    """A trial folder that already exists (its study's database was removed and the study started
    anew) makes the run claim trial0000_2; trials.csv names that folder, not the old one."""
    first = run_cli(*tune_args(tmp_path, tiny_folder, SPACE, trials=1))
    assert first.returncode == 0, first.stderr
    (study_folder,) = (tmp_path / "saved").glob("*-search")
    (study_folder / "study.db").unlink()
    again = run_cli(*tune_args(tmp_path, tiny_folder, SPACE, trials=1))
    assert again.returncode == 0, again.stderr
    rows = list(csv.DictReader((study_folder / "trials.csv").open()))
    assert rows[0]["run_dir"].endswith("trial0000_2") and (REPO / rows[0]["run_dir"]).is_dir()
