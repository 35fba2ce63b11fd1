"""Using a trained network: predict.py (files, folders, tars, any size, a non-image among them),
export.py's weights / ONNX / int8 formats, the inference benchmark, Grad-CAM pictures, and where
test.py writes by default."""

import csv
import json
import os
import re
import shutil
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from checkpoint.schema import load_checkpoint
from conftest import assert_one_line_error, bomb_png, png_ok, run_cli, tiny_config, write_folder


@pytest.fixture
def checkpoint(finished_run):
    """The last.pth of the suite's finished tiny run (read-only)."""
    return finished_run[0] / "last.pth"


@pytest.fixture(scope="module")
def pictures(tmp_path_factory, tiny_folder):
    """A folder with a 32x32 png, a 100x80 greyscale jpg, a text file named .png; and a tar of two."""
    root = tmp_path_factory.mktemp("mine")
    folder = root / "photos"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(next((tiny_folder / "test" / "cat").glob("*.png")), folder / "cat.png")
    Image.open(folder / "cat.png").convert("L").resize((100, 80)).save(folder / "sub" / "big.jpg")
    Image.open(folder / "cat.png").save(folder / "sub" / "cat.webp")  # any format Pillow reads
    (folder / "notes.png").write_text("not a picture")
    with tarfile.open(root / "more.tar.gz", "w:gz") as tar:
        for path in sorted((tiny_folder / "test" / "dog").glob("*.png")):
            tar.add(path, arcname=f"dogs/{path.name}")
    return folder, root / "more.tar.gz"


def test_predict_reads_folders_and_tars_resizes_and_names_what_it_cannot_read(checkpoint, pictures, tmp_path):
    folder, archive = pictures
    out = tmp_path / "preds.csv"
    proc = run_cli("predict.py", "--checkpoint", checkpoint, folder, archive, "--topk", "2", "--out", out)
    assert proc.returncode == 1  # one file failed; the others were predicted
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "notes.png: cannot read as an image" in errors[0] and "Traceback" not in proc.stderr
    assert "note: resized 1 of 5 images to 32x32" in proc.stdout and "big.jpg: 100x80" in proc.stdout
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["image", "class_1", "probability_1", "class_2", "probability_2"]
    names = [r[0] for r in rows[1:]]
    assert [n.rsplit("/", 1)[-1] for n in names[:3]] == ["cat.png", "big.jpg", "cat.webp"] and len(names) == 5
    assert all("more.tar.gz:dogs/" in n for n in names[3:])
    for r in rows[1:]:
        assert float(r[2]) >= float(r[4]) and r[1] != r[3]


def test_predict_refuses_bombs_huge_members_and_damaged_archives_in_one_line_each(checkpoint, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "bomb.png").write_bytes(bomb_png(50000, 50000))
    Image.fromarray(np.zeros((40, 30, 3), np.uint8)).save(folder / "small.png")
    (folder / "huge.bmp").write_bytes(bytes(2**20 + 10_000))  # more than a picture of 1,200 pixels needs
    proc = run_cli("predict.py", "--resume", checkpoint, folder)
    errors = sorted(ln for ln in proc.stderr.splitlines() if ln.startswith("error: "))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "small.png" in proc.stdout
    assert (
        len(errors) == 2 and "bomb.png: declares 2,500,000,000 pixels, more than the limit of 50,000,000" in errors[0]
    )
    assert "huge.bmp: cannot read as an image" in errors[1]  # read: a picture of 50 M pixels may be that big
    proc = run_cli("predict.py", "--resume", checkpoint, folder, "--max_pixels", 1200)
    errors = sorted(ln for ln in proc.stderr.splitlines() if ln.startswith("error: "))
    assert len(errors) == 2 and "bomb.png: declares" in errors[0] and "huge.bmp: 1,058,576 bytes" in errors[1]
    assert "small.png" in proc.stdout  # 1,200 pixels: 40x30 passes
    with tarfile.open(tmp_path / "in.tar.xz", "w:xz") as tar:
        tar.add(folder / "small.png", arcname="small.png")
        tar.add(folder / "huge.bmp", arcname="noise.bmp")
    damaged = bytearray((tmp_path / "in.tar.xz").read_bytes())
    damaged[len(damaged) // 2 :] = bytes(len(damaged) - len(damaged) // 2)
    (tmp_path / "damaged.tar.xz").write_bytes(bytes(damaged))
    assert_one_line_error(
        run_cli("predict.py", "--resume", checkpoint, tmp_path / "damaged.tar.xz"), "cannot read archive"
    )


def test_predictions_csv_cannot_carry_a_spreadsheet_formula(tmp_path):
    from predict import write_rows

    rows = [("=HYPERLINK(1).png", [("cat", 0.9)]), ("-2+3.png", [("dog", 0.8)]), ("plain.png", [("frog", 0.7)])]
    write_rows(tmp_path / "p.csv", rows, 1)
    cells = [row[0] for row in csv.reader((tmp_path / "p.csv").open())][1:]
    assert cells == ["'=HYPERLINK(1).png", "'-2+3.png", "plain.png"]


def test_predict_json_tta_and_missing_input(checkpoint, pictures, tmp_path):
    folder, _ = pictures
    out = tmp_path / "p.json"  # --resume, as in test.py (--checkpoint is the same flag)
    proc = run_cli("predict.py", "--resume", checkpoint, folder / "cat.png", "--tta", "flip", "--out", out)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert len(data) == 1 and len(data[0]["top"]) == 3
    assert sum(t["probability"] for t in data[0]["top"]) <= 1.0 + 1e-6
    assert_one_line_error(run_cli("predict.py", "--checkpoint", checkpoint, tmp_path / "nope.jpg"), "nope.jpg")
    assert_one_line_error(
        run_cli("predict.py", "--checkpoint", checkpoint, folder, "--out", tmp_path / "p.txt"), ".csv or .json"
    )


def test_onnx_export_agrees_with_pytorch_and_predicts_the_same(checkpoint, pictures, tiny_folder, tmp_path):
    folder, _ = pictures
    model = tmp_path / "m.onnx"
    proc = run_cli("export.py", "--resume", checkpoint, "--format", "onnx", "--out", model)
    assert proc.returncode == 0, proc.stderr
    diff = float(re.search(r"max abs logit difference ([\d.e+-]+); argmax identical: True", proc.stdout).group(1))
    assert diff < 1e-3
    from deploy.onnx_export import compare
    from deploy.predictor import OnnxPredictor, TorchPredictor

    # on real-looking pictures too (the export's own check draws random ones), and with the same
    # test-time augmentation on both paths
    torch_predictor, onnx_predictor = TorchPredictor(checkpoint), OnnxPredictor(model)
    real = np.stack([np.asarray(Image.open(p)) for p in sorted((tiny_folder / "test").glob("*/*.png"))])
    diff, same = compare(torch_predictor, model, real)
    assert diff < 1e-3 and same
    for tta in ("flip", "multicrop"):
        assert np.abs(onnx_predictor.logits(real, tta) - torch_predictor.logits(real, tta).numpy()).max() < 1e-3
    both = [
        run_cli("predict.py", "--checkpoint", path, folder / "cat.png", folder / "sub").stdout.splitlines()[-1]
        for path in (checkpoint, model)
    ]
    assert both[0].split("\t")[1].split()[0] == both[1].split("\t")[1].split()[0]  # same top class
    assert_one_line_error(
        run_cli("predict.py", "--checkpoint", model, folder / "cat.png", "--cam"), "Grad-CAM needs the network"
    )
    import onnx

    damaged = [
        ("classes", "['cat'", "its metadata 'classes' is missing or not JSON"),
        ("classes", '["cat", "dog"]', "names 2 classes, but its network has 10 outputs"),
        ("image_size", "[30000, 30000]", "its 'image_size' is not [height, width], each from 1 to 1024"),
        ("image_size", "[64, 64]", "its metadata says 64x64 images, its graph takes 32x32"),
        ("data_stats", '{"mean": [0, 0, 0], "std": [1, 0, 1]}', "its 'data_stats' is not {'mean'"),
    ]
    for key, value, message in damaged:
        graph = onnx.load(model)
        next(p for p in graph.metadata_props if p.key == key).value = value
        onnx.save(graph, tmp_path / "odd.onnx")
        assert_one_line_error(run_cli("predict.py", "--resume", tmp_path / "odd.onnx", folder / "cat.png"), message)


def test_int8_export_reports_its_accuracy_next_to_fp32(checkpoint, tmp_path):
    proc = run_cli("export.py", "--resume", checkpoint, "--format", "onnx-int8", "--out", tmp_path / "q.onnx")
    assert proc.returncode == 0, proc.stderr
    fp32, int8 = map(float, re.search(r"fp32 ([\d.]+)%  int8 ([\d.]+)%", proc.stdout).groups())
    from deploy.onnx_export import accuracy, run_images
    from deploy.predictor import OnnxPredictor, TorchPredictor

    predictor = TorchPredictor(checkpoint)
    _, valid, labels = run_images(predictor, None)  # the run's own validation pictures, measured again
    assert fp32 == round(accuracy(predictor, valid, labels), 2)
    assert int8 == round(accuracy(OnnxPredictor(tmp_path / "q.onnx"), valid, labels), 2)
    assert ("warning: int8 loses" in proc.stdout) == (fp32 - int8 > 0.5)


def test_weights_export_keeps_the_image_size_and_never_overwrites_its_source(checkpoint, tmp_path):
    out = tmp_path / "w.pth"
    assert run_cli("export.py", "--resume", checkpoint, "--out", out).returncode == 0
    full, weights = load_checkpoint(checkpoint), load_checkpoint(out)
    assert weights["image_size"] == [32, 32] and set(weights) < set(full)
    assert "optimizer" not in weights and "rng" not in weights  # weights only
    assert all(torch.equal(full["state_dict"][k], v) for k, v in weights["state_dict"].items())
    assert weights["config"]["data_loader"]["args"]["data_dir"] == "data/"  # not the training machine's paths
    assert weights["config"]["trainer"]["save_dir"] == "saved/" != full["config"]["trainer"]["save_dir"]
    full["config"]["data_loader"]["args"]["data_dir"] = "data/"
    full["config"]["trainer"]["save_dir"] = "saved/"
    assert weights["config"] == full["config"]
    before = checkpoint.read_bytes()
    assert_one_line_error(run_cli("export.py", "--resume", checkpoint, "--out", checkpoint), "is the checkpoint")
    assert checkpoint.read_bytes() == before
    other_run = tmp_path / "last.pth"  # another run's resumable state is never replaced by weights
    shutil.copy(checkpoint, other_run)
    assert_one_line_error(run_cli("export.py", "--resume", out, "--out", other_run), "is a run's full checkpoint")
    assert other_run.read_bytes() == before
    assert run_cli("export.py", "--resume", checkpoint, "--out", out).returncode == 0  # an export may be replaced


def test_test_py_never_writes_beside_a_checkpoint_outside_saved(checkpoint, tiny_folder, tmp_path):
    shipped = tmp_path / "pretrained" / "net.pth"
    shipped.parent.mkdir()
    shutil.copy(checkpoint, shipped)
    proc = run_cli("test.py", "--resume", shipped, "--data_dir", tiny_folder, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in shipped.parent.iterdir()) == ["net.pth"]
    out = tmp_path / "saved" / "test" / "pretrained-net"
    assert (out / "test_metrics.json").is_file()
    png_ok(out / "test_gradcam_mistakes.png")


def test_predict_cam_and_the_inference_benchmark(checkpoint, pictures, tmp_path, capsys):
    from benchmarks.infer_benchmark import cli as infer_benchmark

    folder, _ = pictures
    proc = run_cli("predict.py", "--checkpoint", checkpoint, folder / "cat.png", "--cam", "--cam_dir", tmp_path)
    assert proc.returncode == 0, proc.stderr
    png_ok(tmp_path / "cam_1.png", min_side=150)
    threads = torch.get_num_threads()
    try:  # in this process, as `python -m benchmarks.infer_benchmark ...` runs it
        assert infer_benchmark(["--checkpoint", str(checkpoint), "--calls", "5", "--batch", "8"]) in (0, None)
    finally:
        torch.set_num_threads(threads)
    bench = capsys.readouterr().out
    rows = re.findall(r"^\| (pytorch eager fp32|onnxruntime fp32|onnxruntime int8 \(QDQ\)) \| ([\d.]+) \|", bench, re.M)
    assert [r[0] for r in rows] == ["pytorch eager fp32", "onnxruntime fp32", "onnxruntime int8 (QDQ)"]
    assert all(float(r[1]) > 0 for r in rows) and np.isfinite([float(r[1]) for r in rows]).all()


def test_an_output_folder_that_cannot_be_written_is_one_line_before_any_work(checkpoint, tiny_folder, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    for script, flag in (("test.py", "--data_dir"), ("report.py", "--data_dir")):
        proc = run_cli(script, "--resume", checkpoint, flag, tiny_folder, "--out", blocker / "out")
        assert_one_line_error(proc, "--out", "cannot write in")
    assert_one_line_error(run_cli("export.py", "--resume", checkpoint, "--out", blocker / "w.pth"), "cannot write in")


def test_a_checkpoint_never_makes_test_py_download_into_a_folder_it_names(checkpoint, tmp_path):
    ckpt = load_checkpoint(checkpoint)
    (tmp_path / "elsewhere").mkdir()
    ckpt["config"]["data_loader"]["args"].update(data_dir=str(tmp_path / "elsewhere"), download=True)
    torch.save(ckpt, tmp_path / "from_elsewhere.pth")
    proc = run_cli("test.py", "--resume", tmp_path / "from_elsewhere.pth", "--out", tmp_path / "out")
    assert_one_line_error(proc, "elsewhere: no CIFAR-10 here")  # not "could not download"
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_an_output_of_the_wrong_kind_is_one_line_before_any_work(checkpoint, tiny_folder, tmp_path):
    a_file, a_folder = tmp_path / "a_file", tmp_path / "a_folder.csv"
    a_file.write_text("")
    a_folder.mkdir()
    picture = next((tiny_folder / "test").rglob("*.png"))
    predict = ("predict.py", "--resume", checkpoint, picture)
    cases = [
        ((*predict, "--out", a_folder), "--out", "is a folder; expected a file name"),
        ((*predict, "--cam", "--cam_dir", a_file), "--cam_dir", "is a file; expected a folder"),
        ((*predict, "--threads", -5), "--threads", "expected an integer >= 0"),
        (("test.py", "--resume", checkpoint, "--data_dir", tiny_folder, "--out", a_file), "is a file"),
        (("lr_find.py", "-c", checkpoint.parent / "config.json", "--out", f"{tmp_path}/plots/"), "expected a .png"),
        (("lr_find.py", "-c", checkpoint.parent / "config.json", "--out", tmp_path), "expected a .png"),
    ]
    for argv, *fragments in cases:
        assert_one_line_error(run_cli(*argv), *fragments)
    assert not (tmp_path / "plots").exists() and a_file.read_text() == ""


def test_grad_cam_maps_have_the_pictures_size_and_lie_in_0_1():
    from deploy.cam import grad_cam
    from model.model import DilatedNet

    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    heat = grad_cam(DilatedNet().eval(), {"mean": [0.5] * 3, "std": [0.25] * 3}, images, [0, 3, 9])
    assert heat.shape == (3, 32, 32) and heat.min() >= 0 and heat.max() <= 1 + 1e-6


def test_a_full_disk_while_writing_results_is_one_line_and_keeps_the_old_files(
    checkpoint, tiny_folder, tmp_path, monkeypatch
):
    def no_space(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("utils.paths.os.fsync", no_space)  # every output fails as it is flushed to disk
    picture = next((tiny_folder / "test").rglob("*.png"))
    (tmp_path / "p.csv").write_text("old")
    (tmp_path / "w.pth").write_text("old")
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "test_metrics.json").write_text("old")
    runs = [
        (("predict.py", "--resume", checkpoint, picture, "--out", tmp_path / "p.csv"), "p.csv: cannot write"),
        (("export.py", "--resume", checkpoint, "--out", tmp_path / "w.pth"), "w.pth: cannot write"),
        (("test.py", "--resume", checkpoint, "--data_dir", tiny_folder, "--out", tmp_path / "test"), "cannot write"),
    ]
    for argv, message in runs:
        line = assert_one_line_error(run_cli(*argv), message, "No space left on device")
        assert ".tmp" not in line  # named by the file asked for, not by its temp file
    assert (tmp_path / "p.csv").read_text() == (tmp_path / "w.pth").read_text() == "old"
    assert (tmp_path / "test" / "test_metrics.json").read_text() == "old"
    assert not [p for p in tmp_path.rglob(".*tmp*")]  # no temp file left behind


def test_names_from_data_are_data_in_the_console_the_csv_and_report_md(checkpoint, tmp_path):
    """Class names and file names reach every output made safe for it: no terminal escapes, no CSV
    formulas, no Markdown or HTML markup, and a Latin-1 name does not crash a writer."""
    from utils.safe_text import for_console, for_csv, for_markdown

    hostile = "ok\x1b[2J\x1b]0;OWNED\x07"
    assert "\x1b" not in for_console(hostile) and "\\x1b[2J" in for_console(hostile)
    assert for_console("a\nb") == "a\\nb"
    assert [for_csv(n) for n in ("=1+2", "+cmd", "-2+3", "@SUM(A1)", "cat")] == [
        "'=1+2",
        "'+cmd",
        "'-2+3",
        "'@SUM(A1)",
        "cat",
    ]
    assert for_markdown("a|b <img src=x onerror=alert(1)> [x](javascript:y)") == (
        "a\\|b \\<img src=x onerror=alert\\(1\\)\\> \\[x\\]\\(javascript:y\\)"
    )
    latin1 = b"caf\xe9".decode("utf-8", "surrogateescape")  # a folder name that is not UTF-8
    assert for_console(latin1) == "caf\\xe9" and for_console(latin1).encode("utf-8")
    # predict: a class list and a file name from a crafted checkpoint and folder
    ckpt = torch.load(checkpoint, weights_only=True)
    ckpt["classes"] = ["=1+2", "+cmd", "-2+3", "@SUM(A1)", "a|b", "line\nbreak", hostile, "cat", "dog", "frog"]
    torch.save(ckpt, tmp_path / "odd.pth")
    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(folder / f"{hostile}.png")
    out = tmp_path / "p.csv"
    proc = run_cli("predict.py", "--resume", tmp_path / "odd.pth", folder, "--topk", "10", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout + proc.stderr and "\\x1b[2J" in proc.stdout
    rows = list(csv.reader(out.open()))
    assert len(rows) == 2 and not any(cell.startswith(("=", "+", "-", "@")) for cell in rows[1])
    assert "\x1b" not in out.read_text() and "\n" not in "".join(rows[1])


def test_an_export_is_named_for_what_it_holds_and_a_failed_predict_keeps_the_old_csv(checkpoint, tmp_path):
    proc = run_cli("export.py", "--resume", checkpoint, "--format", "onnx", "--out", tmp_path / "m.pth")
    assert_one_line_error(proc, "m.pth: --format onnx writes a .onnx file")
    proc = run_cli("export.py", "--resume", checkpoint, "--out", tmp_path / "w.onnx")
    assert_one_line_error(proc, "w.onnx: --format weights writes a .pth or .pt file")
    out = tmp_path / "good.csv"
    out.write_text("image,class_1,probability_1\nold.png,cat,0.9\n")
    (tmp_path / "bad.png").write_text("not a picture")
    proc = run_cli("predict.py", "--resume", checkpoint, tmp_path / "bad.png", "--out", out)
    assert proc.returncode != 0 and "not written" in proc.stderr
    assert out.read_text() == "image,class_1,probability_1\nold.png,cat,0.9\n"


def test_a_large_input_size_is_predicted_in_smaller_batches():
    """The memory of one forward pass stays that of 256 pictures of 32x32, whatever the input size."""
    from predict import BATCH, batch_for

    assert batch_for((32, 32)) == BATCH and batch_for((64, 64)) == BATCH // 4 and batch_for((1024, 1024)) == 1


def test_test_py_refuses_images_of_another_size(finished_run, tmp_path):
    from PIL import Image

    for k, name in enumerate(["airplane", "automobile"]):
        (tmp_path / "big" / "test" / name).mkdir(parents=True)
        Image.new("RGB", (64, 64), (k * 100, 0, 0)).save(tmp_path / "big" / "test" / name / "0.png")
    proc = run_cli("test.py", "--resume", finished_run[0] / "last.pth", "--data_dir", tmp_path / "big", cwd=tmp_path)
    assert_one_line_error(proc, "the checkpoint was trained on 32x32 images, the data holds 64x64")


def test_a_class_folder_name_that_is_not_utf8_trains_tests_and_predicts(tmp_path):
    """A Latin-1 folder name (caf\\xe9) is shown escaped in the console, the report's pictures and the
    CSV; no writer crashes on it."""
    folder = write_folder(tmp_path / "data")
    for split in ("train", "test"):
        os.rename(os.fsencode(folder / split / "cat"), os.fsencode(folder / split) + b"/caf\xe9")
    proc = run_cli("train.py", "-c", tiny_config(tmp_path, folder, report=True))
    assert proc.returncode == 0, proc.stderr
    run_dir = next((tmp_path / "saved").glob("*/*"))
    assert "caf\\\\xe9" in (run_dir / "report.md").read_text()  # escaped for Markdown too
    tested = run_cli("test.py", "--resume", run_dir / "last.pth", "--data_dir", folder, "--out", tmp_path / "t")
    assert tested.returncode == 0 and "acc_caf\\xe9" in tested.stdout, tested.stderr
    predicted = run_cli("predict.py", "--resume", run_dir / "last.pth", folder / "test", "--out", tmp_path / "p.csv")
    assert predicted.returncode == 0 and "caf\\xe9" in (tmp_path / "p.csv").read_text(), predicted.stderr


def test_the_predictor_refuses_pictures_it_cannot_read_and_takes_one_picture_as_a_batch(checkpoint):
    """Float pictures in [0, 1], pictures of another size and a wrong layout are a ValueError saying
    what was expected (they used to give confident nonsense or a raw permute error)."""
    import numpy as np

    from deploy.predictor import TorchPredictor

    predictor = TorchPredictor(checkpoint)
    pictures = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    probs = predictor.predict(pictures)
    assert probs.shape == (4, len(predictor.classes))
    assert np.allclose(predictor.predict(pictures[0]), probs[:1], atol=1e-6)  # one HWC picture: a batch of one
    with pytest.raises(ValueError, match=r"expected uint8 pictures .*got float32 \(values 0..1: multiply by 255"):
        predictor.predict(pictures.astype(np.float32) / 255)
    with pytest.raises(ValueError, match="expected 32x32 pictures .*got 64x64: resize them first"):
        predictor.predict(np.zeros((2, 64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match=r"expected RGB pictures of shape \(N, H, W, 3\)"):
        predictor.predict(np.zeros((2, 3, 32, 32), np.uint8))


def test_gradcam_captions_name_the_files_and_one_picture_fills_its_figure(monkeypatch, tmp_path):
    import numpy as np

    import logger.plots as plots
    from deploy import cam
    from model.model import DilatedNet

    seen = {}
    monkeypatch.setattr(plots, "plot_cam", lambda images, heat, titles, path, title: seen.update(titles=titles))
    probs = np.eye(10)[[1, 0]] * 0.9 + 0.01  # both wrong, predicted 1 and 0
    images = np.zeros((2, 32, 32, 3), np.uint8)
    stats = {"mean": [0.5] * 3, "std": [0.25] * 3}
    classes = [str(i) for i in range(10)]
    cam.plot_mistake_cams(
        DilatedNet(),
        stats,
        images,
        np.array([0, 1]),
        probs,
        classes,
        tmp_path / "c.png",
        names=["cat/a.png", "dog/b.png"],
    )
    assert [t.split(":")[0] for t in seen["titles"]] == ["cat/a.png", "dog/b.png"]
    monkeypatch.undo()
    one = plots.plot_cam(images[:1], np.zeros((1, 32, 32)), ["x"], tmp_path / "one.png", "one")
    from PIL import Image

    width, height = Image.open(one).size
    assert width < 2.5 * height  # one pair wide, not three (the rest of the row left empty)


def test_predict_cam_on_a_file_name_that_is_not_utf8(checkpoint, pictures, tmp_path):
    """A name of raw bytes reaches the captions escaped (matplotlib refused the lone surrogates)."""
    import os
    import shutil

    folder, _ = pictures
    odd = os.path.join(os.fsencode(tmp_path), b"caf\xe9.png")
    shutil.copy(folder / "cat.png", odd)
    proc = run_cli("predict.py", "--checkpoint", checkpoint, os.fsdecode(odd), "--cam", "--cam_dir", tmp_path / "cams")
    assert proc.returncode == 0, proc.stderr
    png_ok(tmp_path / "cams" / "cam_1.png", min_side=150)


def test_predict_reads_and_predicts_a_batch_at_a_time_and_keeps_no_pixels_it_does_not_need(checkpoint, monkeypatch):
    """What is held at the network's size never grows with the number of pictures: each batch is
    predicted as it is read and its pixels dropped (kept only for --cam)."""
    import numpy as np

    import predict
    from deploy.images import Picture
    from deploy.predictor import TorchPredictor

    predictor = TorchPredictor(checkpoint)
    monkeypatch.setattr(predict, "batch_for", lambda size: 4)
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(10)]
    held = []

    def stream():
        for i, a in enumerate(arrays):
            held.append(sum(p.image is not None for p in made))  # pixels still held when the next is read
            picture = Picture(f"p{i}.png", a.copy(), (32, 32)) if i != 3 else Picture("bad.png", None, error="x")
            made.append(picture)
            yield picture

    made = []
    read, good, probs = predict.predict_all(predictor, stream(), "none")
    assert len(read) == 10 and len(good) == 9 and probs.shape == (9, len(predictor.classes))
    assert max(held) <= 4 and all(p.image is None for p in good)
    good_arrays = [a for i, a in enumerate(arrays) if i != 3]
    assert np.allclose(probs, predictor.predict(np.stack(good_arrays)), atol=1e-5)  # as one batch would give
    made.clear()
    _, good, _ = predict.predict_all(predictor, stream(), "none", keep_images=True)
    assert all(p.image is not None for p in good)  # --cam draws them


def test_an_onnx_file_with_dynamic_sides_and_1024_px_in_its_metadata_predicts_one_picture_at_a_time(
    checkpoint, pictures, tmp_path
):
    """The largest size an ONNX file may name, with a graph that takes any size: predict.py resizes
    each picture to 1024x1024 and runs them one at a time (batch_for), so what it holds stays that
    of one large picture (measured: 1.3 GB peak for 20 pictures, 0.6 GB above the 32-px baseline)."""
    import json

    import onnx

    import predict

    folder, _ = pictures
    model, dynamic = tmp_path / "m.onnx", tmp_path / "dynamic.onnx"
    assert run_cli("export.py", "--resume", checkpoint, "--format", "onnx", "--out", model).returncode == 0
    proto = onnx.load(str(model))
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "height", "width"
    next(p for p in proto.metadata_props if p.key == "image_size").value = json.dumps([1024, 1024])
    onnx.save(proto, str(dynamic))
    from deploy.predictor import OnnxPredictor

    assert OnnxPredictor(dynamic).image_size == (1024, 1024) and predict.batch_for((1024, 1024)) == 1
    proc = run_cli("predict.py", "--checkpoint", dynamic, folder, "--out", tmp_path / "p.csv")
    assert "resized 3 of 3 images to 1024x1024" in proc.stdout + proc.stderr  # (and notes.png is no image: status 1)
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 4  # the header and the 3 pictures


def test_predict_names_a_pipe_it_will_not_open_and_predicts_the_pictures_beside_it(checkpoint, pictures, tmp_path):
    folder, _ = pictures
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)  # opened, it would wait for a writer forever
    proc = run_cli("predict.py", "--checkpoint", checkpoint, pipe, folder / "cat.png", "--out", tmp_path / "p.csv")
    assert proc.returncode == 1
    assert f"error: {pipe}: not a regular file (a pipe, a socket or a device); not read" in proc.stderr
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 2  # the header and cat.png
