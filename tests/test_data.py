import shutil

import numpy as np
import pytest

from base import BaseDataLoader
from conftest import CLASSES, N_TEST, N_TRAIN, make_images, write_folder, write_tar, write_torchvision_root
from data_loader.data_loaders import Cifar10DataLoader, channel_stats
from data_loader.datasets import load_splits
from utils.errors import ConfigError, DataError


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

    # our pickles have the real layout but not the real md5 sums
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    splits = load_splits(write_torchvision_root(tmp_path / "cifar"))
    check_splits(splits)
    assert np.array_equal(splits["train"].images, make_images(N_TRAIN, 0)[0])


def test_jpeg_folder(tmp_path):
    splits = load_splits(write_folder(tmp_path, ".jpg"))
    check_splits(splits)


def test_failed_download_says_how_to_use_a_local_copy(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    def offline(self):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(CIFAR10, "download", offline)
    (tmp_path / "data").mkdir()  # an existing folder: the download is tried there
    with pytest.raises(DataError) as info:
        load_splits(tmp_path / "data", download=True)
    message = str(info.value)
    assert "could not download CIFAR-10" in message and "--data_dir" in message and "\n" not in message


def test_missing_folder_without_download(tmp_path):
    with pytest.raises(DataError, match="no CIFAR-10 here"):
        load_splits(tmp_path / "nothing", download=False)
    with pytest.raises(DataError, match="archive not found"):
        load_splits(tmp_path / "nothing.tar.xz")


def test_corrupt_image_is_named(tmp_path):
    root = write_folder(tmp_path)
    (root / "train" / "cat" / "0013.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"train/cat/0013\.png: cannot decode image"):
        load_splits(root)


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
        with pytest.raises(ConfigError, match="validation_split"):
            BaseDataLoader.split_indices(100, bad, seed=0)


def test_loader_validation_comes_from_train_or_test(tiny_folder, tmp_path):
    loader = Cifar10DataLoader(str(tiny_folder), batch_size=8, validation_split=10, num_workers=0)
    assert len(loader.dataset) == 30 and len(loader.valid_dataset) == 10 and loader.valid_name == "validation"
    assert loader.stats == channel_stats(loader.dataset.images)  # stats from the training part only
    loader = Cifar10DataLoader(str(tiny_folder), batch_size=8, validation_split=0, num_workers=0)
    assert len(loader.dataset) == 40 and len(loader.valid_dataset) == 20 and loader.valid_name == "test"
    images, labels = next(iter(loader.split_validation()))
    assert images.shape == (8, 3, 32, 32) and images.dtype.is_floating_point
    train_only = tmp_path / "train_only"
    shutil.copytree(tiny_folder / "train", train_only / "train")
    with pytest.raises(DataError, match="validation_split is 0 and there is no test/ split"):
        Cifar10DataLoader(str(train_only), validation_split=0, num_workers=0)
