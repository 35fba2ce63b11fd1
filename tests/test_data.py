import io
import json
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from base import BaseDataLoader
from conftest import (
    CLASSES,
    N_TEST,
    N_TRAIN,
    assert_one_line_error,
    bomb_png,
    make_images,
    run_cli,
    tiny_config,
    write_folder,
    write_tar,
    write_torchvision_root,
)
from data_loader.data_loaders import Cifar10DataLoader, channel_stats
from data_loader.datasets import load_splits
from utils.errors import ArgumentError, DataError


def check_splits(splits):
    train, test = splits["train"], splits["test"]
    assert train.images.shape == (10 * N_TRAIN, 32, 32, 3) and train.images.dtype == np.uint8
    assert test.images.shape == (10 * N_TEST, 32, 32, 3)
    assert train.classes == CLASSES
    assert np.bincount(train.labels).tolist() == [N_TRAIN] * 10


def test_image_folder(tiny_folder):
    splits = load_splits(tiny_folder)
    check_splits(splits)
    expected, labels = make_images(N_TRAIN, 0)
    assert np.array_equal(splits["train"].images, expected)  # png is lossless
    assert np.array_equal(splits["train"].labels, labels)


@pytest.mark.parametrize("suffix, mode", [(".tar", "w"), (".tar.gz", "w:gz"), (".tar.xz", "w:xz")])
def test_tar_archives_read_in_place(tiny_folder, tmp_path, suffix, mode):
    path = write_tar(tiny_folder, tmp_path / f"data{suffix}", mode)
    splits = load_splits(path)
    check_splits(splits)
    assert np.array_equal(splits["train"].images, load_splits(tiny_folder)["train"].images)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # nothing extracted


def test_torchvision_root(tmp_path, monkeypatch):
    import torchvision.datasets.cifar

    # these pickles have the real layout but not the real md5 sums
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    splits = load_splits(write_torchvision_root(tmp_path / "cifar"))
    check_splits(splits)
    assert np.array_equal(splits["train"].images, make_images(N_TRAIN, 0)[0])


def test_jpeg_folder(tmp_path):
    splits = load_splits(write_folder(tmp_path, ".jpg"))
    check_splits(splits)


def test_missing_folder_without_download(tmp_path):
    with pytest.raises(DataError, match="no CIFAR-10 here"):
        load_splits(tmp_path / "nothing", download=False)
    with pytest.raises(DataError, match="archive not found"):
        load_splits(tmp_path / "nothing.tar.xz")


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"not a png at all", "(not an image format PIL can read)"),
        (b"GIF89a not really", "(not an image format PIL can read)"),
        ("half", "(image file is truncated)"),
    ],
)
def test_corrupt_image_is_named(tmp_path, content, reason):
    """Every corrupt image, whatever PIL makes of it, is named with why (train.py prints this line:
    test_unreadable_image_names_the_member_not_a_buffer below)."""
    root = write_folder(tmp_path)
    image = root / "train" / "cat" / "0013.png"
    image.write_bytes(image.read_bytes()[: image.stat().st_size // 2] if content == "half" else content)
    with pytest.raises(DataError) as err:
        load_splits(root)
    assert str(err.value) == f"{image}: cannot decode image {reason}"


def test_corrupt_archive(tiny_tar_xz, tmp_path):
    broken = tmp_path / "broken.tar.xz"
    broken.write_bytes(tiny_tar_xz.read_bytes()[: tiny_tar_xz.stat().st_size // 2])
    with pytest.raises(DataError, match="broken.tar.xz: cannot read archive"):
        load_splits(broken)


def test_validation_split_is_fixed_seeded_and_disjoint():
    train, valid = BaseDataLoader.split_indices(100, 10, seed=0)
    again, valid_again = BaseDataLoader.split_indices(100, 10, seed=0)
    assert len(valid) == 10 and len(train) == 90
    assert np.array_equal(valid, valid_again) and not set(train) & set(valid)
    assert len(BaseDataLoader.split_indices(100, 0.25, seed=0)[1]) == 25
    assert not np.array_equal(valid, BaseDataLoader.split_indices(100, 10, seed=1)[1])
    for bad in (100, -1, 1.5, True, "10"):
        with pytest.raises(ArgumentError, match="^validation_split: "):
            BaseDataLoader.split_indices(100, bad, seed=0)


def test_loader_validation_comes_from_train_or_test(tiny_folder, tmp_path, monkeypatch):
    loader = Cifar10DataLoader(str(tiny_folder), batch_size=8, validation_split=10, num_workers=0)
    assert len(loader.dataset) == 30 and len(loader.valid_dataset) == 10 and loader.valid_name == "validation"
    assert loader.stats == channel_stats(loader.dataset.images)  # stats from the training part only
    loader = Cifar10DataLoader(str(tiny_folder), batch_size=8, validation_split=0, num_workers=0)
    assert len(loader.dataset) == 40 and len(loader.valid_dataset) == 20 and loader.valid_name == "test"
    images, labels = next(iter(loader.split_validation()))
    assert images.shape == (8, 3, 32, 32) and images.dtype.is_floating_point
    train_only = tmp_path / "train_only"
    shutil.copytree(tiny_folder / "train", train_only / "train")
    import data_loader.datasets as datasets

    decoded, real = [], datasets.to_rgb
    monkeypatch.setattr(datasets, "to_rgb", lambda img: decoded.append(1) or real(img))
    with pytest.raises(DataError, match="validation_split is 0 and there is no test/ split"):
        Cifar10DataLoader(str(train_only), validation_split=0, num_workers=0)
    assert decoded == []  # said from the file names, before any image was decoded


def test_macos_metadata_is_skipped(tmp_path, tiny_folder):
    """A folder archived on a Mac holds `._<name>` AppleDouble files and `__MACOSX/`: not images."""
    root = tmp_path / "mac"
    shutil.copytree(tiny_folder, root)
    (root / "train" / "cat" / "._0013.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble metadata")
    check_splits(load_splits(root))
    junk = tmp_path / "junk"
    (junk / "train" / "cat").mkdir(parents=True)
    (junk / "train" / "cat" / "._0013.png").write_bytes(b"\x00\x05\x16\x07")
    archive = tmp_path / "mac.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(root / "train", arcname="cifar10/train")
        tar.add(root / "test", arcname="cifar10/test")
        tar.add(junk / "train", arcname="__MACOSX/cifar10/train")
    check_splits(load_splits(archive))


def test_a_zip_renamed_tar_is_one_clear_line(tmp_path, tiny_folder):
    path = tmp_path / "data.tar"
    with zipfile.ZipFile(path, "w") as z:
        z.write(tiny_folder / "train" / "cat" / "0012.png", "train/cat/0012.png")
    with pytest.raises(DataError) as err:
        load_splits(path)
    assert str(err.value) == f"{path}: is a zip archive, not a tar; unpack it and give the folder"
    (tmp_path / "text.tar").write_text("not an archive\n" * 100)
    with pytest.raises(DataError) as err:
        load_splits(tmp_path / "text.tar")
    assert "\n" not in str(err.value) and "expected a tar, tar.gz or tar.xz" in str(err.value)


def test_the_image_of_another_size_is_named_even_when_read_first(tmp_path):
    root = write_folder(tmp_path)
    Image.fromarray(np.zeros((40, 36, 3), np.uint8)).save(root / "test" / "airplane" / "0000.png")  # read first
    with pytest.raises(DataError) as err:
        load_splits(root)
    message = str(err.value)
    assert "test/airplane/0000.png are not 32x32 like the other 59" in message and "0000.png is 36x40" in message


def _modes():
    """(name, PIL image, the RGB uint8 array it must decode to, the modes Pillow reopens its PNG in;
    None: checked without a file)."""
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    rgb = np.stack([grey, 255 - grey, np.full_like(grey, 77)], axis=2)
    alpha = np.where(np.arange(64).reshape(8, 8) % 2 == 0, 255, 0).astype(np.uint8)
    over_black = (rgb.astype(np.uint16) * alpha[..., None] // 255).astype(np.uint8)
    grey_rgb = np.repeat(grey[..., None], 3, axis=2)
    grey_over_black = (grey_rgb.astype(np.uint16) * alpha[..., None] // 255).astype(np.uint8)
    bits = (grey > 127).astype(np.uint8) * 255
    palette_img = Image.fromarray(rgb).quantize(colors=256, method=Image.Quantize.FASTOCTREE)
    palette_rgb = np.asarray(palette_img.convert("RGB"))
    transparent = palette_img.copy()
    transparent.info["transparency"] = int(np.asarray(palette_img)[0, 0])
    hidden = np.asarray(palette_img) == np.asarray(palette_img)[0, 0]
    return [
        ("RGB", Image.fromarray(rgb), rgb, ("RGB",)),
        ("L", Image.fromarray(grey), grey_rgb, ("L",)),
        ("1", Image.fromarray(bits).convert("1"), np.repeat(bits[..., None], 3, axis=2), ("1",)),
        ("RGBA", Image.fromarray(np.dstack([rgb, alpha])), over_black, ("RGBA",)),
        ("LA", Image.fromarray(np.dstack([grey, alpha])).convert("LA"), grey_over_black, ("LA",)),
        ("P", palette_img, palette_rgb, ("P",)),
        ("P+transparency", transparent, np.where(hidden[..., None], 0, palette_rgb).astype(np.uint8), ("P",)),
        ("I;16", Image.fromarray(grey.astype(np.uint16) * 257), grey_rgb, ("I;16", "I")),
        ("CMYK", Image.fromarray(rgb).convert("CMYK"), rgb, None),  # JPEG is lossy: CMYK is checked without a file,
    ]


@pytest.mark.parametrize("name, image, expected, file_modes", _modes(), ids=[m[0] for m in _modes()])
def test_every_image_mode_decodes_to_the_values_it_shows(name, image, expected, file_modes):
    """Not only that it decodes: 16-bit grey keeps its tones (Pillow's convert clips it white),
    transparency is black (not the colour hidden under it)."""
    from data_loader.datasets import _decode, to_rgb

    if file_modes is None:
        decoded = to_rgb(image)
    else:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        assert Image.open(io.BytesIO(buffer.getvalue())).mode in file_modes  # the file keeps its mode
        decoded = _decode(buffer.getvalue(), "x.png")
    assert decoded.dtype == np.uint8 and decoded.shape == (8, 8, 3)
    np.testing.assert_array_equal(decoded, expected)


def test_float_images_are_refused_by_name():
    from data_loader.datasets import to_rgb

    with pytest.raises(ValueError, match="32-bit float"):
        to_rgb(Image.fromarray(np.zeros((4, 4), np.float32)))


def test_the_validation_split_of_an_image_folder_knows_its_file_names(tiny_folder, tmp_path):
    """The pictures of mistakes name an image by its file where the data has files."""
    from data_loader.data_loaders import Cifar10DataLoader
    from logger.plots import plot_misclassified

    loader = Cifar10DataLoader(str(tiny_folder), batch_size=4, num_workers=0, validation_split=8, download=False)
    valid = loader.split_validation().dataset
    assert len(valid.names) == 8 and all(n.count("/") == 1 and n.endswith(".png") for n in valid.names)
    assert valid.names[0].split("/")[0] in loader.classes
    probs = np.full((8, 10), 0.01)
    probs[:, 0] = 0.91  # everything "airplane": the non-airplanes are mistakes
    path = plot_misclassified(valid.images, valid.labels, probs, loader.classes, tmp_path / "m.png", names=valid.names)
    assert path.is_file() and path.stat().st_size > 1000


def test_an_unreadable_image_says_it_could_not_be_read(tmp_path, monkeypatch):
    """A file the process may not read (chmod 000 without root's override) is a read error, not the
    output errors' "cannot write"."""
    import pathlib

    folder = write_folder(tmp_path / "data")
    real = pathlib.Path.read_bytes

    def denied(self):
        if self.name == "0001.png":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(pathlib.Path, "read_bytes", denied)
    with pytest.raises(DataError, match=r"0001.png: cannot read \(Permission denied\)"):
        Cifar10DataLoader(str(folder), num_workers=0, validation_split=4, download=False)


def test_batch_larger_than_the_data_writes_nothing(tmp_path, tiny_folder):
    proc = run_cli("train.py", "-c", tiny_config(tmp_path, tiny_folder), "--bs", 1000)
    assert_one_line_error(proc, "data_loader.args.batch_size: 1000 is more than the 40 training images")
    assert not (tmp_path / "saved").exists()  # no orphan run folder


@pytest.mark.parametrize(
    "content, message",
    [
        (b"GIF89a not really", "not an image format PIL can read"),
        (bomb_png(50000, 50000), "declares 2,500,000,000 pixels, more than the limit of 50,000,000; not decoded"),
        (bomb_png(9000, 9000), "declares 9000x9000 = 81,000,000 pixels"),  # under Pillow's own limit, over ours
    ],
)
def test_unreadable_image_names_the_member_not_a_buffer(tmp_path, tiny_folder, content, message):
    data = tmp_path / "data"
    shutil.copytree(tiny_folder, data)
    (data / "train" / "cat" / "0013.png").write_bytes(content)
    line = assert_one_line_error(run_cli("train.py", "-c", tiny_config(tmp_path, data)), "train/cat/0013.png")
    assert "BytesIO" not in line and message in line
    assert json.loads((tmp_path / "config.json").read_text())  # untouched input
    assert not (tmp_path / "saved").exists()


def test_a_line_break_in_a_file_name_keeps_the_error_on_one_line(tmp_path, tiny_folder):
    data = tmp_path / "data"
    shutil.copytree(tiny_folder, data)
    (data / "train" / "cat" / "bad\nname.png").write_bytes(b"not an image")
    line = assert_one_line_error(run_cli("train.py", "-c", tiny_config(tmp_path, data)), "bad\\nname.png")
    assert "not an image format PIL can read" in line


def _tar(path, names):
    import io
    import tarfile

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buf, format="PNG")
    with tarfile.open(path, "w") as tar:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = len(buf.getvalue())
            tar.addfile(info, io.BytesIO(buf.getvalue()))
    return path


@pytest.mark.parametrize(
    "names, message",
    [
        (["c/train/cat/0.png", "../../evil/train/cat/1.png"], "points outside the archive's folder"),
        (["c/train/cat/0.png", "/abs/train/cat/1.png"], "points outside the archive's folder"),
        (["a/train/cat/0.png", "b/train/cat/0.png"], "holds train/cat/0.png twice"),
        (["a/train/cat/0.png", "b/train/cat/1.png"], "images under two roots (a/ and b/)"),
    ],
)
def test_tar_members_must_follow_one_layout(tmp_path, names, message):
    from data_loader.datasets import load_splits
    from utils.errors import DataError

    with pytest.raises(DataError, match=message.replace("(", "\\(").replace(")", "\\)")):
        load_splits(_tar(tmp_path / "d.tar", names))


def test_a_data_dir_typo_creates_nothing_and_downloads_nothing(tmp_path):
    from data_loader.datasets import load_splits
    from utils.errors import DataError

    typo = tmp_path / "dtaa" / "cifar"
    with pytest.raises(DataError, match="no such folder; CIFAR-10 is downloaded only into data/"):
        load_splits(typo, download=True)
    assert not (tmp_path / "dtaa").exists()


def test_a_failed_download_leaves_no_empty_data_folder(tmp_path, monkeypatch):
    """The offline default run (data_dir data/, download true): one line that says how to use a local
    copy, and no data/ left behind."""
    import torchvision.datasets

    from data_loader.datasets import load_splits
    from utils.errors import DataError

    class Offline(torchvision.datasets.CIFAR10):
        def __init__(self, root, train=True, download=False):
            Path(root).mkdir(parents=True, exist_ok=True)  # as torchvision does before it fetches
            raise OSError("Network is unreachable")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", Offline)
    with pytest.raises(
        DataError, match="data: could not download CIFAR-10 \\(OSError: Network is unreachable\\)"
    ) as info:
        load_splits("data/", download=True)
    assert list(tmp_path.iterdir()) == []
    assert "--data_dir" in str(info.value) and "\n" not in str(info.value)  # says how to use a local copy


def test_a_class_folder_missing_is_named_not_trained_around(tmp_path):
    root = write_folder(tmp_path / "data")
    shutil.rmtree(root / "train" / "truck")
    shutil.rmtree(root / "test" / "truck")
    config = tiny_config(tmp_path, root)
    assert_one_line_error(
        run_cli("train.py", "-c", config), "arch.args.num_classes: the network has 10 outputs", "9 classes (airplane"
    )
    assert not (tmp_path / "saved").exists()
    (root / "train" / "truck").mkdir()  # there, but empty: named as such
    line = assert_one_line_error(run_cli("train.py", "-c", config), "train/truck: an empty class folder")
    assert "num_classes" not in line


def test_a_data_set_may_decode_only_so_many_pixels_in_all(tmp_path, tiny_folder, monkeypatch):
    """Each picture under the per-image limit, but all of them together over the data set's: one line
    from the headers, before the pixels that would take the memory are decoded."""
    import numpy as np

    import data_loader.datasets as datasets

    monkeypatch.setattr(datasets, "MAX_DATASET_PIXELS", 30 * 32 * 32)  # 30 of the tiny folder's 60 pictures
    decoded = []
    monkeypatch.setattr(datasets, "to_rgb", lambda img: decoded.append(1) or np.zeros((32, 32, 3), np.uint8))
    line = assert_one_line_error(run_cli("train.py", "-c", tiny_config(tmp_path, tiny_folder)), "pixels in all")
    assert str(tiny_folder) in line and "not decoded" in line and decoded == []  # judged from the headers alone


def test_the_validation_split_keeps_its_seeded_order_so_its_first_batches_hold_every_class():
    """Files are read class by class; the held-out images keep the seeded order, so the first batches of
    validation (all that trainer.limit_batches and --fast_dev_run read) are no single class."""
    import numpy as np

    from base.base_data_loader import BaseDataLoader

    labels = np.repeat(np.arange(10), 500)  # 5,000 images in class order, as a folder is read
    train, valid = BaseDataLoader.split_indices(len(labels), 1000, seed=0)
    assert len(set(labels[valid[:64]])) == 10 and np.all(np.diff(train) > 0)
    assert sorted(valid.tolist()) == sorted(set(range(5000)) - set(train.tolist()))


def test_sizes_and_the_pixel_budget_are_judged_from_the_headers_before_any_pixel_is_decoded(tmp_path, monkeypatch):
    """Two large pictures among small ones: the odd-size line comes from the headers, nothing decoded;
    and data_loader.args.max_dataset_pixels raises (or lowers) the data set's budget."""
    import numpy as np
    from PIL import Image

    import data_loader.datasets as datasets
    from conftest import write_folder

    root = write_folder(tmp_path / "data")
    for i in range(2):  # 2 pictures of 1200x1000 (1.2 M pixels each) among the small ones
        Image.new("RGB", (1200, 1000), (10, 20, 30)).save(root / "train" / "cat" / f"big{i}.png")
    decoded = []
    monkeypatch.setattr(datasets, "to_rgb", lambda img: decoded.append(1) or np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(DataError, match=r"train/cat/big0.png and 1 other image\(s\) are not 32x32 like the other"):
        datasets.load_splits(root)
    assert decoded == []  # judged from the headers
    with pytest.raises(DataError, match=r"pixels in all .*data_loader.args.max_dataset_pixels raises the limit"):
        Cifar10DataLoader(str(root), num_workers=0, download=False, max_dataset_pixels=2_000_000)
    assert decoded == []
    with pytest.raises(ArgumentError, match="max_dataset_pixels: expected an integer >= 1 or null"):
        Cifar10DataLoader(str(root), num_workers=0, download=False, max_dataset_pixels=0)


def test_reading_the_data_is_said_before_it_starts(tmp_path, tiny_tar_xz, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="data"):
        Cifar10DataLoader(str(tiny_tar_xz), num_workers=0, download=False, batch_size=8)
    assert f"Data: reading {tiny_tar_xz} (" in caplog.text and "MB archive: every image is decompressed" in caplog.text


def test_a_torchvision_built_for_another_torch_is_one_line_naming_the_pair(monkeypatch):
    """Only what needs torchvision imports it (mixing, the torchvision CIFAR-10 root); a mismatched
    build fails there as one line, not as `operator torchvision::nms does not exist` at start."""
    import importlib

    from utils import runtime
    from utils.errors import UserError

    real = importlib.import_module

    def mismatched(name, *args):
        if name.startswith("torchvision"):
            raise RuntimeError("operator torchvision::nms does not exist")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", mismatched)
    with pytest.raises(UserError, match=r"torchvision .* does not load beside torch .*pip install torch==2.14.1"):
        runtime.torchvision_module("transforms.v2")


def test_linked_images_count_in_a_tar_as_in_its_folder_and_a_link_out_of_it_is_one_line(tmp_path, monkeypatch):
    """GNU tar stores a hard or symbolic link to an image as a link member: it is read (400 of 420
    images were, before), and a link whose target the archive does not hold is named."""
    import os

    import data_loader.datasets as datasets
    from conftest import write_folder

    root = write_folder(tmp_path / "data")
    cat = root / "train" / "cat"
    first = sorted(cat.iterdir())[0]
    os.symlink(first.name, cat / "zz_sym.png")
    os.link(first, cat / "zz_hard.png")
    with tarfile.open(tmp_path / "data.tar", "w") as tar:
        tar.add(root, arcname="data")
    folder, archive = load_splits(root), load_splits(tmp_path / "data.tar")
    assert (
        len(archive["train"].images)
        == len(folder["train"].images)
        == len(load_splits(write_folder(tmp_path / "plain"))["train"].images) + 2
    )
    from deploy.images import read_inputs  # predict.py reads an archive's pictures the same way

    pictures = list(read_inputs([tmp_path / "data.tar"], (32, 32)))
    assert len(pictures) == len(list(read_inputs([root], (32, 32)))) and not any(p.error for p in pictures)
    os.symlink("/etc/hostname", cat / "zz_out.png")
    with tarfile.open(tmp_path / "out.tar", "w") as tar:
        tar.add(root, arcname="data")
    with pytest.raises(DataError, match="zz_out.png' links to '/etc/hostname', which the archive does not hold"):
        load_splits(tmp_path / "out.tar")
    monkeypatch.setattr(datasets, "MAX_MEMBERS", 10)
    with pytest.raises(DataError, match="data.tar: holds over 10 members"):
        datasets._read_tar.__wrapped__(str(tmp_path / "data.tar"), 0, 0)


def test_an_image_that_links_to_an_unreadable_file_is_one_line_in_training_and_one_row_in_predict(tmp_path):
    """A link to /proc/self/pagemap (reading it fails): one line naming it when training reads the
    folder; predict.py reports it and goes on with the other pictures."""
    import os

    from conftest import write_folder
    from deploy.images import read_inputs

    root = write_folder(tmp_path / "data")
    os.symlink("/proc/self/pagemap", root / "train" / "cat" / "zz.png")
    with pytest.raises(DataError, match=r"zz.png: cannot read it \(.*\); not an image file"):
        load_splits(root)
    pictures = list(read_inputs([root / "train" / "cat"], (32, 32)))
    bad = [p for p in pictures if p.error]
    assert len(bad) == 1 and "zz.png: cannot read it" in bad[0].error and len(pictures) > 1


def test_channel_stats_hold_one_chunk_of_pixels_not_one_picture_and_refuse_a_blank_channel():
    """A few large pictures (legal, under the data set's pixel budget) once cost a float64 copy of
    every pixel of a chunk of 4,096 pictures (5.9 GB for five 7000x7000 PNGs): chunks are of pixels."""
    import tracemalloc

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 1024, 1024, 3), dtype=np.uint8)
    tracemalloc.start()
    stats = channel_stats(images, chunk=2**16)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 * 2**20  # the whole float64 copy would be 48 MB
    as_float = images.reshape(-1, 3).astype(np.float64) / 255
    assert np.allclose(stats["mean"], as_float.mean(0), atol=1e-6)
    assert np.allclose(stats["std"], as_float.std(0), atol=1e-6)
    images[..., 2] = 7
    with pytest.raises(DataError, match=r"pics: its 2 training images have the same value everywhere in channel 2"):
        channel_stats(images, "pics")


def test_a_pipe_given_as_the_data_is_named_for_what_it_is_and_never_opened(tmp_path):
    import os

    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    with pytest.raises(DataError, match=r"pipe: not a folder or an archive \(a pipe, a socket or a device\)"):
        load_splits(pipe)


def test_converting_a_large_transparent_or_16_bit_picture_holds_wider_types_a_block_at_a_time():
    """to_rgb's arithmetic (alpha compositing in uint16, 16-bit grey scaled in float64) once held a
    whole picture in the wider type: 1.2 GB beside one 7071x7071 RGBA PNG. Same values, a block of rows each."""
    import tracemalloc

    from PIL import Image

    from data_loader.datasets import to_rgb

    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (2048, 2048, 4), dtype=np.uint8)
    expected = ((rgba[..., :3].astype(np.uint16) * rgba[..., 3:] + 127) // 255).astype(np.uint8)
    tracemalloc.start()
    out = to_rgb(Image.fromarray(rgba, "RGBA"))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert np.array_equal(out, expected)
    assert peak < 2.5 * rgba.nbytes  # the picture, its RGB result and one block (uint16 of it all: 4.5 x)
    grey = rng.integers(0, 65536, (300, 200), dtype=np.uint16)
    out = to_rgb(Image.fromarray(grey.astype(np.int32), "I"))
    assert np.array_equal(out[..., 0], np.round(grey / 257.0).astype(np.uint8)) and (out[..., 0] == out[..., 2]).all()
