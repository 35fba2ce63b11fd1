import matplotlib.pyplot as plt
import numpy as np
import pytest

from conftest import (
    CLASSES,
    assert_one_line_error,
    make_images,
    png_ok,
    run_cli,
)
from data_loader.transforms import build_augment
from logger.plots import confusion_matrix, per_class_accuracy
from logger.run_report import write_report


def test_confusion_matrix_counts_every_image():
    targets = np.array([0, 0, 1, 2, 2, 2])
    predictions = np.array([0, 1, 1, 2, 0, 2])
    cm = confusion_matrix(targets, predictions, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert cm.sum() == len(targets)
    assert per_class_accuracy(cm) == pytest.approx([50.0, 100.0, 200 / 3])


def test_write_report_makes_every_file_and_closes_its_figures(tmp_path):
    images, targets = make_images(3, seed=0)
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(10), size=len(targets))
    history = [
        {
            "epoch": e,
            "loss": 2.0 / e,
            "accuracy": 30.0 * e,
            "val_loss": 2.1 / e,
            "val_accuracy": 28.0 * e,
            "lr": 0.1 / e,
        }
        for e in (1, 2, 3)
    ]
    augment = build_augment(
        [
            {"type": "HorizontalFlip", "args": {"p": 0.5}},
            {
                "type": "CoarseDropout",
                "args": {
                    "num_holes_range": [1, 1],
                    "hole_height_range": [16, 16],
                    "hole_width_range": [16, 16],
                    "fill": "mean",
                    "p": 1.0,
                },
            },
        ],
        [120.0, 110.0, 100.0],
    )
    before = plt.get_fignums()
    paths = write_report(
        tmp_path,
        config={"name": "t"},
        spec_text="spec",
        history=history,
        classes=CLASSES,
        valid_images=images,
        targets=targets,
        probs=probs,
        augment=augment,
        train_images=images,
    )
    assert plt.get_fignums() == before
    for name in ("curves", "confusion_matrix", "misclassified", "augmentations"):
        png_ok(paths[name])
    report = paths["report"].read_text()
    right = int((probs.argmax(1) == targets).sum())
    assert f"{100 * right / len(targets):.2f}% of {len(targets)} images" in report  # recomputed from the predictions
    assert "| val_accuracy | 84.00 |" in report  # the last epoch, formatted as the epoch log


def test_the_augmentation_picture_shows_every_class_once():
    import numpy as np

    from logger.run_report import augmentation_rows

    labels = np.array([3, 3, 0, 1, 2, 0, 9, 4, 5, 6, 7, 8, 1])
    rows = augmentation_rows(np.zeros((len(labels), 4, 4, 3)), labels)
    assert sorted(labels[rows]) == list(range(10)) and len(rows) == 10
    assert len(augmentation_rows(np.zeros((20, 4, 4, 3)), None)) == 8 and augmentation_rows(None, labels) == []


def test_report_refuses_another_validation_split(finished_run, tmp_path):
    proc = run_cli("report.py", "--resume", finished_run[0] / "last.pth", "--validation_split", 10, "--out", tmp_path)
    assert_one_line_error(proc, "--validation_split: 10 is not the run's 0", "use test.py for other data")
    assert not list(tmp_path.iterdir())


def test_cpu_curves_draws_the_runs_and_times_each_one_to_its_accuracies(tmp_path):
    csv = tmp_path / "metrics.csv"
    csv.write_text("epoch,val_accuracy,image_size\n1,50.0,16\n2,86.0,32\n3,88.0,32\n")
    proc = run_cli("-m", "benchmarks.cpu_curves", "--run", f"a={csv}:60:120", "--out", tmp_path / "c.png")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # 1 min at 16 px, then 2 min per 32-px epoch
    assert "a: 85%: 3 min (epoch 2), 87%: 5 min (epoch 3), 89%: never; 5 min in all" in proc.stdout
    assert png_ok(tmp_path / "c.png")


def test_cpu_curves_costs_epochs_by_their_measured_times_after_a_setup(tmp_path):
    csv = tmp_path / "metrics.csv"
    csv.write_text("epoch,val_accuracy,epoch_time\n1,50.0,60\n2,86.0,120\n3,88.0,180\n")
    args = ("-m", "benchmarks.cpu_curves", "--run", f"kd={csv}", "--out", tmp_path / "c.png")
    proc = run_cli(*args, "--setup", "kd=10")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # 10 min before epoch 1, then each epoch's own seconds
    assert "kd: 85%: 13 min (epoch 2), 87%: 16 min (epoch 3), 89%: never; 16 min in all" in proc.stdout
    assert_one_line_error(run_cli(*args, "--setup", "other=10"), "--setup other: no --run of that name")
    csv.write_text("epoch,val_accuracy\n1,50.0\n")
    assert_one_line_error(run_cli(*args), "no epoch_time column")
