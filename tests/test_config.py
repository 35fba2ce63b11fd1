import json

import pytest
import torch

from config.overrides import add_override_flags, base_argparser
from config.parser import ConfigParser
from config.reading import load_config
from conftest import REPO, assert_one_line_error, run_cli, tiny_config
from utils import resolve_device
from utils.errors import ConfigError


@pytest.fixture
def config():
    return json.loads((REPO / "config.json").read_text())


def parse(config, **modification):
    return ConfigParser(config, modification={tuple(k.split("__")): v for k, v in modification.items()})


def test_keys_left_out_get_the_schemas_defaults(config):
    """Only `name`, the `type` sections, metrics and trainer.epochs are required: a config without
    the rest parses, and each left-out key holds the default the schema declares."""
    from config.schema import ConstraintsSection, TrainerSection

    minimal = {key: config[key] for key in ("name", "arch", "data_loader", "optimizer", "loss", "metrics")}
    minimal["lr_scheduler"] = config["lr_scheduler"]
    minimal["trainer"] = {"epochs": 3}
    parsed = parse(minimal)
    assert parsed["trainer"] == {  # the defaults the README documents, written out
        "epochs": 3,
        "limit_batches": None,
        "clip_grad_norm": None,
        "accumulate": 1,
        "save_dir": "saved/",
        "save_period": 10,
        "verbosity": 2,
        "monitor": "max val_accuracy",
        "early_stop": 0,
        "tensorboard": True,
        "amp": "auto",
        "channels_last": False,
        "report": True,
        "sync_bn": False,
        "dist_timeout": 600,
        **dict.fromkeys(("ema", "swa", "init", "mix", "progressive_resize", "distill")),
    }
    assert set(parsed["trainer"]) == set(TrainerSection.model_fields)
    assert parsed["trainer"]["epochs"] == 3 and parsed["seed"] == 0 and parsed["device"] == "auto"
    assert parsed["constraints"] is None  # no constraints section: trained without them (and said so)
    minimal["constraints"] = {}
    assert parse(minimal)["constraints"] == ConstraintsSection().model_dump()
    assert parse(minimal)["constraints"]["max_params"] == 100_000 and parsed["trainer"]["save_period"] == 10


def test_parsing_creates_no_folders(config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config["trainer"]["save_dir"] = "runs"
    parsed = parse(config)
    assert not (tmp_path / "runs").exists() and list(tmp_path.iterdir()) == []
    from checkpoint.saver import RunFiles

    files = RunFiles.of(parsed)
    assert not (tmp_path / "runs").exists()  # the run's files are named, not made
    files.open(parsed.config, torch.device("cpu"))
    files.close()
    assert (files.run_dir / "config.json").is_file() and (files.run_dir / "provenance.json").is_file()


@pytest.mark.parametrize(
    "edit, key",
    [
        (lambda c: c.update(epochs=3), "epochs: unknown config key"),
        (lambda c: c["trainer"].update(epoch=3), "trainer.epoch: unknown config key"),
        (lambda c: c["trainer"].update(epochs="ten"), "trainer.epochs: expected an integer"),
        (lambda c: c["trainer"].update(amp="yes"), "trainer.amp: expected one of"),
        (lambda c: c["trainer"].pop("epochs"), "trainer.epochs: missing config key"),
        (lambda c: c["optimizer"]["args"].update(lrr=0.1), "optimizer.args.lrr: unknown argument of SGD"),
        (lambda c: c["optimizer"]["args"].update(lr="fast"), "optimizer.args.lr: expected"),
        (lambda c: c["arch"].update(type="ResNet50"), "arch.type: 'ResNet50' is not one of DilatedNet, TeacherNet"),
        (lambda c: c["arch"]["args"].update(width=3), "arch.args.width: unknown argument of DilatedNet"),
        (
            lambda c: c["data_loader"]["args"].update(batch_size=8.5),
            "data_loader.args.batch_size: expected an integer >= 1, got 8.5",
        ),
        (
            lambda c: c["data_loader"]["args"].update(batch_size=0),
            "data_loader.args.batch_size: expected an integer >= 1, got 0",
        ),
        (lambda c: c["lr_scheduler"]["args"].update(epochs=3), "lr_scheduler.args.epochs: is set by the trainer"),
        (lambda c: c.update(metrics=["accuracy", "f1"]), "metrics[1]: unknown metric 'f1'"),
        (
            lambda c: c.update(metrics=["accuracy", {"type": "top_k_acc", "name": "image_size"}]),
            "metrics[1]: the name 'image_size' is taken (the trainer logs 'image_size' itself)",
        ),
        (
            lambda c: c.update(metrics=[{"type": "accuracy", "name": "val_top"}]),
            "metrics[0]: the name 'val_top' is taken (names starting with 'val_' are the validation figures",
        ),
        (lambda c: c["trainer"].update(lookahead={"every": 0}), "trainer.lookahead: this option was removed"),
        (lambda c: c["trainer"].update(ema={"decay": 0.9}), "trainer.swa: cannot be combined with trainer.ema"),
        (lambda c: c["trainer"].update(monitor="best val_accuracy"), "trainer.monitor"),
        (lambda c: c["loss"].update(kind="x"), "loss.kind: unknown config key"),
        (lambda c: c.update(arch=["DilatedNet"]), 'arch: expected {"type": <name>, "args": {...}}, got ["DilatedNet"]'),
        (lambda c: c["trainer"].update(tensorboard=1), "trainer.tensorboard: expected true or false, got 1"),
        (lambda c: c.update(seed=True), "seed: expected an integer, got true"),
        (lambda c: c.update(seed=2**64), "seed: expected a number < 9223372036854775808, got 18446744073709551616"),
        (lambda c: c.update(seed=-1), "seed: expected an integer >= 0, got -1"),
        (lambda c: c["trainer"].update(ema={"decay": 1}), "trainer.ema.decay: expected a number < 1"),
        (lambda c: c["trainer"].update(mix={"type": "Mix"}), "trainer.mix.type: expected one of 'MixUp' or 'CutMix'"),
        (lambda c: c["trainer"].update(progressive_resize={"min_size": 4}), "progressive_resize.min_size: expected an"),
        (
            lambda c: c["constraints"].update(required_augmentations=["ToGray", 3]),
            "constraints.required_augmentations[1]: expected a string, got 3",
        ),
        (lambda c: c["trainer"].update(epochs=0), "trainer.epochs: expected an integer >= 1, got 0"),
        (lambda c: c["trainer"].update(epochs=-1), "trainer.epochs: expected an integer >= 1, got -1"),
        (lambda c: c["trainer"].update(save_period=0), "trainer.save_period: expected an integer >= 1, got 0"),
        (lambda c: c["trainer"].update(dist_timeout=0), "trainer.dist_timeout: expected an integer >= 1, got 0"),
        (
            lambda c: c["trainer"].update(monitor="max val_acc"),
            "trainer.monitor: 'val_acc' is not logged (expected one of: loss, val_loss, accuracy",
        ),
        (lambda c: c["trainer"].update(verbosity=5), "trainer.verbosity: expected one of 0, 1 or 2, got 5"),
        (lambda c: c["trainer"].update(early_stop=-1), "trainer.early_stop: expected an integer >= 0, got -1"),
        (
            lambda c: c["trainer"].update(monitor="best val_accuracy"),
            'trainer.monitor: expected "off" or "min <metric>" / "max <metric>", got "best val_accuracy"',
        ),
        (
            lambda c: c["optimizer"]["args"].update(lr=float("nan")),
            "optimizer.args.lr: expected a finite number, got nan",
        ),
        (
            lambda c: c["lr_scheduler"]["args"].update(div_factor=float("inf")),
            "lr_scheduler.args.div_factor: expected a finite number, got inf",
        ),
        (
            lambda c: c["trainer"].update(save_dir="runs/\udcff\udcfe"),  # bytes 0xff 0xfe from a shell
            "trainer.save_dir: expected a path that is valid UTF-8 text",
        ),
        (
            lambda c: c["trainer"].update(save_dir="runs\nx"),
            "trainer.save_dir: expected a path without control characters",
        ),
        (
            lambda c: c.update(name="../../x"),
            "name: expected a plain folder name (letters, digits, '.', '_', '-'), got \"../../x\"",
        ),
    ],
)
def test_bad_config_names_the_key(config, edit, key):
    """Each bad value is one line naming the key and what was expected, when the config is read."""
    edit(config)
    with pytest.raises(ConfigError) as info:
        parse(config)
    assert key in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_augmentation_names_the_entry(config, tiny_folder):
    from data_loader.transforms import build_augment

    entries = config["data_loader"]["args"]["augmentations"]
    entries[2]["args"]["holes"] = 1
    with pytest.raises(ConfigError, match=r"augmentations\[2\]\.args\.holes: unknown argument of CoarseDropout"):
        build_augment(entries, [0, 0, 0])
    entries[2]["args"].pop("holes")
    entries[2]["args"]["num_holes_range"] = "one"
    with pytest.raises(ConfigError, match=r"augmentations\[2\]\.args: num_holes_range"):
        build_augment(entries, [0, 0, 0])


def config_file_and_parser(config, tmp_path):
    """The config written to c.json, and train.py's argument parser (with every override flag)."""
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config))
    parser = base_argparser("t")
    add_override_flags(parser)
    return path, parser


def test_command_line_overrides(config, tmp_path):
    path, parser = config_file_and_parser(config, tmp_path)
    args = parser.parse_args(
        [
            "-c",
            str(path),
            "--lr",
            "0.05",
            "--bs",
            "64",
            "--epochs",
            "3",
            "--validation_split",
            "5000",
            "--seed",
            "7",
            "--data_dir",
            "x",
            "--device",
            "cpu",
        ]
    )
    parsed = ConfigParser.from_args(args)
    assert parsed["optimizer"]["args"]["lr"] == 0.05
    assert parsed["data_loader"]["args"]["batch_size"] == 64
    assert parsed["data_loader"]["args"]["validation_split"] == 5000
    assert parsed["trainer"]["epochs"] == 3 and parsed["seed"] == 7 and parsed["device"] == "cpu"
    args = parser.parse_args(["-c", str(path), "--validation_split", "0.1"])
    assert ConfigParser.from_args(args)["data_loader"]["args"]["validation_split"] == 0.1


def test_missing_and_broken_config_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{ nope")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(tmp_path / "bad.json")


def test_one_cycle_gets_its_schedule_from_the_run(config):

    from config.schedules import build_lr_scheduler

    parsed = parse(config, trainer__epochs=3, trainer__swa=None)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=parsed["optimizer"]["args"]["lr"])
    scheduler = build_lr_scheduler(parsed, optimizer, steps_per_epoch=5)
    assert scheduler.total_steps == 15
    assert scheduler.optimizer.param_groups[0]["max_lr"] == pytest.approx(config["optimizer"]["args"]["lr"])
    # with trainer.swa.lr, the schedule spans the epochs before averaging (config.json: 200 of 240)
    shipped = parse(config)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    assert build_lr_scheduler(shipped, optimizer, steps_per_epoch=5).total_steps == 200 * 5


def test_one_cycle_too_short_for_its_warm_up_is_a_config_error(config):

    from config.schedules import build_lr_scheduler

    parsed = parse(config, trainer__epochs=1)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ConfigError, match="lr_scheduler.args.pct_start"):
        build_lr_scheduler(parsed, optimizer, steps_per_epoch=4)


def test_a_yaml_config_is_the_json_config(config, tmp_path):
    """-c config.yaml: the same schema, the same result as the JSON file it was written from."""
    yaml = pytest.importorskip("yaml")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    assert load_config(path) == config
    assert ConfigParser(load_config(path)).config == ConfigParser(config).config


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "name: x\ntrainer: [1, 2\n",
            "config.yaml: not valid YAML (expected ',' or ']', but got '<stream end>' at line 3",
        ),
        ("- just\n- a list\n", "config: expected a JSON object {...} (or a YAML mapping), got list"),
        ("name: x\nseed: 1e-3\n", "seed: expected an integer, got 0.001"),  # a number (YAML 1.2), not an integer
    ],
)
def test_a_bad_yaml_config_is_one_line_naming_the_file_and_line(tmp_path, capsys, text, message):
    import train

    (tmp_path / "config.yaml").write_text(text)
    assert train.cli(["-c", str(tmp_path / "config.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert err.startswith("error: ") and message in err, err


def test_set_overrides_any_key_and_the_schema_checks_its_type(config, tmp_path, capsys):
    path, parser = config_file_and_parser(config, tmp_path)
    flags = "--set loss.args.label_smoothing=0.2 --set name=other --set trainer.epochs=7 --epochs 9".split()
    ema = ["--set", 'trainer.ema={"decay": 0.99}', "--set", "trainer.swa=null"]
    args = parser.parse_args(["-c", str(path), *ema, *flags])
    parsed = ConfigParser.from_args(args)
    assert parsed["trainer"]["ema"] == {"decay": 0.99} and parsed["loss"]["args"]["label_smoothing"] == 0.2
    assert parsed["name"] == "other" and parsed["trainer"]["epochs"] == 9  # the named flag wins
    config["trainer"].update(ema={"decay": 0.9}, swa=None)
    path.write_text(json.dumps(config))
    assert (
        ConfigParser.from_args(parser.parse_args(["-c", str(path), "--set", "trainer.ema=null"]))["trainer"]["ema"]
        is None
    )
    bad = parser.parse_args(["-c", str(path), "--set", "trainer.epochs=ten"])
    with pytest.raises(ConfigError, match='trainer.epochs: expected an integer, got "ten"'):
        ConfigParser.from_args(bad)
    with pytest.raises(SystemExit):
        parser.parse_args(["-c", str(path), "--set", "trainer.epochs"])
    assert "expected key.path=value" in capsys.readouterr().err


@pytest.mark.parametrize(
    "section, edit, message",
    [
        ("arch", {"widths": [64, 64, 144]}, "arch.args: widths, depths and dilations need 4 entries each"),
        ("arch", {"se": -1}, "arch.args.se: expected an integer >= 0"),
        ("data_loader", {"num_workers": -1}, 'data_loader.args.num_workers: expected "auto" or an integer >= 0'),
        (
            "data_loader",
            {"train_subset": 1000},
            "data_loader.args.train_subset: expected an integer from 0 (all) to 40",
        ),
        ("data_loader", {"validation_split": 1.5}, "data_loader.args.validation_split: a fraction must be in [0, 1)"),
        ("lr_scheduler", {"warmup_epochs": 5}, "lr_scheduler.args.warmup_epochs: 5 epochs of warm-up leave no cosine"),
    ],
)
def test_a_value_a_class_refuses_is_named_by_its_config_key(config, tiny_folder, section, edit, message):
    """The classes name only their argument (ArgumentError); the config layer adds the key path."""

    from config.schedules import build_lr_scheduler

    config["data_loader"]["args"].update(data_dir=str(tiny_folder), download=False, batch_size=8)
    config["trainer"]["epochs"] = 2
    if section == "lr_scheduler":
        config["lr_scheduler"] = {"type": "WarmupCosineLR", "args": {}}
    config[section]["args"].update(edit)
    parsed = ConfigParser(config)
    with pytest.raises(ConfigError) as err:
        if section == "lr_scheduler":
            build_lr_scheduler(parsed, torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1), 5)
        else:
            parsed.init_obj(section)
    assert str(err.value).startswith(message), str(err.value)


def test_values_the_schema_cannot_see_are_refused_before_anything_runs(config, caplog):
    """Numbers torch or numpy would refuse later: one line naming the key, when the object is built."""
    from data_loader.data_loaders import auto_workers

    bad = json.loads(json.dumps(config))
    bad["arch"]["args"]["dropout"] = 1.5
    with pytest.raises(ConfigError, match=r"^arch.args.dropout: expected a probability from 0 to below 1, got 1.5$"):
        parse(bad).init_obj("arch")
    bad = json.loads(json.dumps(config))
    bad["data_loader"]["args"]["split_seed"] = -1
    with pytest.raises(ConfigError, match=r"^data_loader.args.split_seed: expected an integer >= 0, got -1$"):
        parse(bad).init_obj("data_loader")  # before any data is read
    cores = __import__("os").cpu_count()
    assert auto_workers(100_000) == cores and f"using {cores}" in caplog.text  # capped, with a note
    assert auto_workers(0) == 0


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("c.json", '{"name": "a", "name": "b"}', "the key 'name' appears twice in one object"),
        ("c.json", "[" * 200_000, "nested too deeply to be a config"),
        ("c.yaml", "[" * 3_000 + "]" * 3_000, "nested too deeply to be a config"),
        ("c.yaml", "a: &x [1, 2]\nb: [*x, *x, *x]\n", "YAML aliases (*name) are not allowed"),
    ],
)
def test_hostile_config_files_are_one_line(tmp_path, name, text, message):
    from config.reading import load_config

    (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / name)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_config_holds_only_its_changes_to_a_base(tmp_path):
    """`"base": "file"` starts from that file: objects merge key by key, other values replace, and a
    section naming another class replaces the base's section whole (its args are no defaults)."""
    (tmp_path / "variants").mkdir()
    child = tmp_path / "variants" / "wide.json"
    child.write_text(
        json.dumps(
            {
                "base": str(REPO / "config.json"),
                "trainer": {"epochs": 7},
                "arch": {"args": {"widths": [48, 48, 96, 96]}},
                "lr_scheduler": {"type": "StepLR", "args": {"step_size": 3}},
            }
        )
    )
    shipped, merged = json.loads((REPO / "config.json").read_text()), load_config(child)
    assert "base" not in merged and merged["trainer"]["epochs"] == 7
    assert merged["trainer"]["swa"] == shipped["trainer"]["swa"]
    assert merged["arch"]["args"] == {**shipped["arch"]["args"], "widths": [48, 48, 96, 96]}
    assert merged["lr_scheduler"] == {"type": "StepLR", "args": {"step_size": 3}}
    ConfigParser(merged)  # and the merged config passes every check
    grandchild = tmp_path / "variants" / "short.json"
    grandchild.write_text(json.dumps({"base": "wide.json", "trainer": {"epochs": 3}}))
    assert load_config(grandchild)["arch"]["args"]["widths"] == [48, 48, 96, 96]


@pytest.mark.parametrize(
    "files, message",
    [
        ({"a.json": {"base": "missing.json"}}, "missing.json: config file not found"),
        ({"a.json": {"base": "b.json"}, "b.json": {"base": "a.json"}}, "a loop of bases"),
        ({"a.json": {"base": "a.json"}}, "a loop of bases"),
        ({"a.json": {"base": 3}}, "base: expected the path"),
    ],
)
def test_bad_bases_are_one_line_errors(tmp_path, files, message):
    from utils.errors import ConfigError

    for name, content in files.items():
        (tmp_path / name).write_text(json.dumps(content))
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path / "a.json")


def test_config_diff_is_what_merge_needs():
    from config.reading import config_diff, merge_config

    base = load_config(REPO / "config.json")
    changed = json.loads(json.dumps(base))
    changed["optimizer"]["args"]["lr"] = 0.3
    changed["data_loader"]["args"]["augmentations"][0]["args"]["p"] = 0.1
    changed["arch"] = {"type": "TeacherNet", "args": {"act": "gelu"}}
    diff = config_diff(base, changed)
    assert diff["optimizer"] == {"args": {"lr": 0.3}} and diff["arch"] == changed["arch"]
    assert diff["data_loader"]["args"]["augmentations"] == changed["data_loader"]["args"]["augmentations"]
    assert set(diff) == {"optimizer", "data_loader", "arch"}
    assert merge_config(base, diff) == changed and config_diff(base, base) == {}


def test_set_reaches_into_lists_by_index_and_by_type(config, tmp_path):
    """--set and a search space share one path syntax: a list entry by index or by its type name."""
    from config.overrides import parse_set

    by_index = parse(config, **{"data_loader__args__augmentations__2__args__p": 0.8})
    by_type = ConfigParser(config, modification=dict([parse_set("data_loader.args.augmentations.CoarseDropout.p=0.7")]))
    assert by_index["data_loader"]["args"]["augmentations"][2]["args"]["p"] == 0.8
    assert by_type["data_loader"]["args"]["augmentations"][2]["args"]["p"] == 0.7
    for key, message in [
        ("data_loader.args.augmentations.9.args.p", "no entry 9 in this list of 4"),
        ("data_loader.args.augmentations.Blur.p", "no entry of type 'Blur'"),
        ("data_loader.args.augmentations.2", "names a whole list entry"),
    ]:
        with pytest.raises(ConfigError, match=message):
            ConfigParser(config, modification=dict([parse_set(f"{key}=0.5")]))


def test_yaml_reads_exponent_numbers_and_refuses_repeated_keys(tmp_path):
    """`lr: 1e-1` is a number (PyYAML alone reads a string), and a repeated key is an error, as in JSON."""
    path = tmp_path / "c.yaml"
    path.write_text("optimizer:\n  args:\n    lr: 1e-1\n    weight_decay: 5E-4\nname: '1e-1'\n")
    loaded = load_config(path)
    assert loaded["optimizer"]["args"] == {"lr": 0.1, "weight_decay": 0.0005} and loaded["name"] == "1e-1"
    path.write_text("seed: 1\nname: x\nseed: 5\n")
    with pytest.raises(ConfigError, match=r"c.yaml: the key 'seed' appears twice in one mapping \(again at line 3"):
        load_config(path)


def test_values_a_class_accepts_but_no_run_means(tmp_path, tiny_folder):
    """A fraction of validation images that rounds to none, a label smoothing outside [0, 1]: one
    line each; a learning rate of 0: a note."""
    from conftest import assert_one_line_error, run_cli, tiny_config

    path = tiny_config(tmp_path, tiny_folder, epochs=1)
    proc = run_cli("train.py", "-c", path, "--validation_split", "0.001")
    assert_one_line_error(proc, "validation_split", "less than one image")
    proc = run_cli("train.py", "-c", path, "--set", "loss.args.label_smoothing=-0.5")
    assert_one_line_error(proc, "loss.args.label_smoothing", "-0.5")
    proc = run_cli("train.py", "-c", path, "--lr", "0", "--set", "lr_scheduler=null")
    assert proc.returncode == 0 and "note: optimizer.args.lr is 0" in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "section, name",
    [
        ("lr_scheduler", "Counter"),
        ("lr_scheduler", "NamedTuple"),
        ("lr_scheduler", "ConfigError"),
        ("optimizer", "Optimizer"),
        ("loss", "Module"),
        ("lr_scheduler", "LRScheduler"),
    ],
)
def test_a_type_that_is_not_a_usable_class_of_its_kind_is_one_line(config, section, name):
    """Names that live in the looked-up modules but are helpers, exceptions or bases are refused by
    name before anything is built (they passed the lookup and crashed later)."""
    edited = json.loads(json.dumps(config))
    edited[section] = {"type": name, "args": {}}
    with pytest.raises(ConfigError, match=rf"{section}.type: '{name}' is not a"):
        ConfigParser(edited)


def test_a_save_dir_with_a_tilde_is_the_home_folder(config, monkeypatch, tmp_path):
    """`--save_dir ~/runs` writes under the home folder (as data_dir reads from it), not into ./~."""
    monkeypatch.setenv("HOME", str(tmp_path))
    from checkpoint.saver import RunFiles

    parsed = parse(config, trainer__save_dir="~/runs")
    assert str(RunFiles.of(parsed).run_dir).startswith(str(tmp_path / "runs" / config["name"]))


@pytest.mark.parametrize(
    "scheduler",
    [
        {"type": "SequentialLR", "args": {"schedulers": ["StepLR", "StepLR"], "milestones": [2]}},
        {"type": "ChainedScheduler", "args": {"schedulers": ["StepLR"]}},
        {"type": "LambdaLR", "args": {"lr_lambda": "x"}},
        {"type": "CyclicLR", "args": {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 2, "scale_fn": "x"}},
    ],
)
def test_a_scheduler_value_of_the_wrong_kind_is_one_line(config, tmp_path, tiny_folder, scheduler):
    from conftest import assert_one_line_error, run_cli, tiny_config

    path = tiny_config(tmp_path, tiny_folder, epochs=1)
    edited = json.loads(path.read_text())
    edited["lr_scheduler"] = scheduler
    path.write_text(json.dumps(edited))
    assert_one_line_error(run_cli("train.py", "-c", path), "lr_scheduler")
    assert not (tmp_path / "saved").exists()


def test_a_dist_timeout_too_large_for_a_timedelta_is_a_config_error(config):
    with pytest.raises(ConfigError, match="trainer.dist_timeout"):
        parse(config, trainer__dist_timeout=10**14)


def test_config_that_is_not_an_object(tmp_path):
    (tmp_path / "c.json").write_text("[1, 2]")
    assert_one_line_error(run_cli("train.py", "-c", tmp_path / "c.json"), "config: expected a JSON object")


@pytest.mark.parametrize("device", ["meta", "mps", "xla"])
def test_unsupported_devices(device):
    with pytest.raises(ConfigError, match="device: .* (not supported here|is not a device)"):
        resolve_device(device)


def test_nan_in_a_config_file_is_one_line_and_creates_nothing(tmp_path, tiny_folder):
    """Python's JSON reads NaN, and torch's `lr < 0` check lets it through."""
    config = tiny_config(tmp_path, tiny_folder)
    config.write_text(config.read_text().replace('"lr": 0.15', '"lr": NaN'))
    assert_one_line_error(run_cli("train.py", "-c", config), "optimizer.args.lr: expected a finite number, got nan")
    assert not (tmp_path / "saved").exists()


def test_a_config_without_constraints_trains_without_them_and_says_so(tmp_path, tiny_folder):
    config = json.loads(tiny_config(tmp_path, tiny_folder).read_text())
    del config["constraints"]
    config["arch"]["args"]["widths"] = [64, 64, 160, 160]  # 115,578 parameters: over the spec's limit
    (tmp_path / "free.json").write_text(json.dumps(config))
    assert ConfigParser(config)["constraints"] is None
    proc = run_cli("train.py", "-c", tmp_path / "free.json", "--epochs", 2)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("Constraints: none (the config has no constraints section") == 1


def test_a_bug_in_a_models_init_keeps_its_traceback(monkeypatch):
    import model.model

    class Buggy(model.model.DilatedNet):
        def __init__(self, num_classes: int = 10):
            super().__init__(num_classes=num_classes)
            len(None)  # a bug: TypeError

    from config import registry

    monkeypatch.setattr(registry.ARCHS, "Buggy", Buggy, raising=False)  # as if listed in config/registry.py
    config = load_config(REPO / "config.json")
    config["arch"] = {"type": "Buggy", "args": {"num_classes": 10}}
    with pytest.raises(TypeError, match="has no len"):  # not a ConfigError hiding it
        ConfigParser(config).init_obj("arch")
    config["optimizer"]["args"]["lr"] = -1.0  # torch's own value checks stay one-line errors
    parsed = ConfigParser(config)
    with pytest.raises(ConfigError, match=r"optimizer.args: SGD refused a value \(ValueError: Invalid learning rate"):
        parsed.init_obj("optimizer", [__import__("torch").nn.Parameter(__import__("torch").zeros(1))])


def test_the_parsed_config_reads_as_typed_attributes_and_as_a_plain_dict(config):
    parsed = parse(config)
    assert parsed.trainer.swa.start == parsed["trainer"]["swa"]["start"] == config["trainer"]["swa"]["start"]
    assert parsed.trainer.epochs == config["trainer"]["epochs"] and parsed.arch.type == "DilatedNet"
    assert parsed.trainer.ema is None and parsed.seed == config["seed"]
    with pytest.raises(AttributeError):
        parsed.trainers  # noqa: B018 (a typo is an error, not None)


def test_a_config_path_that_is_a_pipe_a_link_loop_or_huge_is_one_line(tmp_path):
    """A FIFO given to -c blocked forever; a link loop or a file far too large is named in one line."""
    import os

    from config.reading import load_config

    os.mkfifo(tmp_path / "fifo.json")
    with pytest.raises(ConfigError, match="fifo.json: not a regular file"):
        load_config(tmp_path / "fifo.json")
    (tmp_path / "a.json").symlink_to(tmp_path / "b.json")
    (tmp_path / "b.json").symlink_to(tmp_path / "a.json")
    with pytest.raises(ConfigError, match="a.json: a link that leads nowhere"):
        load_config(tmp_path / "a.json")
    (tmp_path / "big.json").write_text("{" + " " * 2**21 + "}")
    with pytest.raises(ConfigError, match="big.json: 2,097,154 bytes, too large to be a config"):
        load_config(tmp_path / "big.json")


@pytest.mark.parametrize("name", ["config.json", *sorted(p.name for p in (REPO / "configs").glob("*.json"))])
def test_every_shipped_config_is_accepted_names_a_shipped_teacher_and_no_teacher_distils(name):
    """config.json and each config under configs/ (fast.json, teacher.json) pass every check a run
    makes before it builds anything; a distilling one names a teacher file the repository holds, and a
    config that trains a teacher learns from the labels alone (not from config.json's teacher)."""
    path = REPO / name if name == "config.json" else REPO / "configs" / name
    config = ConfigParser(load_config(path)).config
    distill = config["trainer"]["distill"]
    if config["arch"]["type"] == "TeacherNet":
        assert distill is None, name
    if distill is not None:
        assert (REPO / distill["teacher"]).is_file(), distill["teacher"]
