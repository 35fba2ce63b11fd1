import json

import albumentations as A
import numpy as np
import pytest
import torch

from base.base_data_loader import ArrayDataset, BaseDataLoader
from conftest import REPO
from data_loader.transforms import NormalizeCollate, build_augment, build_train_transform, reseed, reseed_batch
from utils.errors import ArgumentError

MEAN_COLOUR = (100.0, 150.0, 200.0)


@pytest.fixture
def entries():
    return json.loads((REPO / "config.json").read_text())["data_loader"]["args"]["augmentations"]


def by_type(entries, name, **args):
    entry = next(e for e in entries if e["type"] == name)
    entry["args"].update(args)
    return entry


def test_shipped_pipeline_holds_the_four_required_transforms(entries):
    augment = build_augment(entries, MEAN_COLOUR)
    kinds = {type(t).__name__: t for t in augment.transforms}
    assert set(kinds) >= {"HorizontalFlip", "ShiftScaleRotate", "CoarseDropout", "ToGray"}
    dropout = kinds["CoarseDropout"]
    assert dropout.num_holes_range == (1, 1)
    assert dropout.hole_height_range == (16, 16) and dropout.hole_width_range == (16, 16)
    assert dropout.fill == MEAN_COLOUR and dropout.fill_mask is None
    assert kinds["ToGray"].num_output_channels == 3


def test_coarse_dropout_fills_one_16x16_hole_with_the_mean_colour(entries):
    augment = build_augment([by_type(entries, "CoarseDropout", p=1.0)], MEAN_COLOUR)
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    for seed in range(5):
        reseed(augment, seed)
        out = augment(image=image)["image"]
        filled = np.all(out == np.array(MEAN_COLOUR, dtype=np.uint8), axis=-1)
        rows, cols = np.nonzero(filled)
        assert filled.sum() == 16 * 16
        assert rows.max() - rows.min() == 15 and cols.max() - cols.min() == 15


def test_to_gray_keeps_three_equal_channels(entries):
    augment = build_augment([by_type(entries, "ToGray", p=1.0)], MEAN_COLOUR)
    image = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    out = augment(image=image)["image"]
    assert out.shape == (32, 32, 3)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])


def test_train_transform_gives_uint8_chw_and_the_collate_normalises_the_batch(entries):
    transform = build_train_transform([], mean=[0.5, 0.5, 0.5])
    out = transform(image=np.full((32, 32, 3), 255, dtype=np.uint8))["image"]
    assert out.shape == (3, 32, 32) and out.dtype == torch.uint8
    images, labels = NormalizeCollate([0.5, 0.5, 0.25], [0.25, 0.25, 0.5])([(out, 3), (torch.zeros_like(out), 7)])
    assert images.dtype == torch.float32 and labels.tolist() == [3, 7]
    assert torch.allclose(images[0], torch.tensor([2.0, 2.0, 1.5]).view(3, 1, 1).expand(3, 32, 32))
    assert torch.allclose(images[1], torch.tensor([-2.0, -2.0, -0.5]).view(3, 1, 1).expand(3, 32, 32))


def test_children_draw_independently_after_reseed():
    """Compose.set_random_seed gives every child the same seed, so two p=0.5 transforms would
    fire together; reseed shares one stream so they do not."""
    augment = A.Compose([A.HorizontalFlip(p=0.5), A.ToGray(num_output_channels=3, p=0.5)])
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    image[:, :16, 0] = 255  # red left half: a flip moves it, ToGray removes the red
    flipped, gray = [], []
    for seed in range(64):
        reseed(augment, seed)
        out = augment(image=image)["image"]
        gray.append(out[0, 0, 0] == out[0, 0, 1])
        flipped.append(out[:, 16:].sum() > out[:, :16].sum())
    assert 10 < sum(flipped) < 54 and 10 < sum(gray) < 54
    assert flipped != gray


def batches(num_workers, seed=0):
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    image[:, :8] = 255
    transform = build_train_transform([{"type": "ShiftScaleRotate", "args": {"p": 1.0}}], [0.5] * 3)
    dataset = ArrayDataset(
        np.repeat(image[None], 16, axis=0), np.zeros(16, dtype=np.int64), transform, reseed=reseed_batch
    )
    torch.manual_seed(seed)
    loader = BaseDataLoader(dataset, batch_size=4, shuffle=False, num_workers=num_workers)
    return [images for images, _ in loader]


def test_every_worker_has_its_own_stream_and_results_do_not_depend_on_workers():
    with_workers = batches(num_workers=2)
    # batches 0 and 1 come from different forked workers: the same image must not get the same
    # augmentations (albumentations 2.0.8 alone repeats one stream in every worker)
    for a in range(4):
        for b in range(a + 1, 4):
            assert not torch.equal(with_workers[a], with_workers[b])
    in_process = batches(num_workers=0)
    assert all(torch.equal(x, y) for x, y in zip(with_workers, in_process))
    assert not torch.equal(torch.stack(in_process), torch.stack(batches(num_workers=0, seed=1)))


def test_last_batch_of_one_image_is_dropped():
    loader = BaseDataLoader(
        ArrayDataset(np.zeros((9, 4, 4, 3), np.uint8), np.zeros(9), lambda image: {"image": image}),
        batch_size=4,
        shuffle=True,
        num_workers=0,
    )
    assert len(loader) == 2 and [len(b[0]) for b in loader] == [4, 4]


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"type": "RandomCrop", "args": {"height": 64, "width": 64}}, "fails on a 32x32 training image (CropSizeError"),
        ({"type": "Resize", "args": {"height": 40, "width": 40}}, "turns a 32x32 image into 40x40"),
    ],
)
def test_an_augmentation_that_cannot_run_on_the_data_is_one_line(tmp_path, tiny_folder, extra, message):
    from conftest import assert_one_line_error, run_cli, tiny_config

    path = tiny_config(tmp_path, tiny_folder, epochs=1)
    config = json.loads(path.read_text())
    config["data_loader"]["args"]["augmentations"].append(extra)
    path.write_text(json.dumps(config))
    assert_one_line_error(run_cli("train.py", "-c", path), "data_loader.args.augmentations", message)
    assert not (tmp_path / "saved").exists()


def test_alternating_flip_mirrors_each_image_on_every_other_epoch_half_of_them_first(tiny_folder):
    """data_loader.args.flip "alternate": the HorizontalFlip entry leaves the per-image pipeline and
    each image is mirrored in exactly one of any two consecutive epochs, a seeded half in the odd ones."""
    from data_loader.data_loaders import Cifar10DataLoader

    flip_only = [{"type": "HorizontalFlip", "args": {"p": 0.5}}, {"type": "ToGray", "args": {"p": 0.0}}]
    loader = Cifar10DataLoader(
        str(tiny_folder), batch_size=8, num_workers=0, download=False, augmentations=flip_only, flip="alternate"
    )
    dataset, n = loader.dataset, len(loader.dataset)
    plain = [torch.from_numpy(dataset.images[i]).permute(2, 0, 1) for i in range(n)]

    def mirrored(epoch):
        samples = dataset.__getitems__([(i, 5, 0, epoch) for i in range(n)])
        out = []
        for i, (image, _) in enumerate(samples):
            assert torch.equal(image, plain[i]) or torch.equal(image, plain[i].flip(-1))
            out.append(not torch.equal(image, plain[i]))
        return out

    one, two, three = mirrored(1), mirrored(2), mirrored(3)
    assert all(a != b for a, b in zip(one, two)) and one == three  # every other epoch, each image
    assert 0 < sum(one) < n  # some images start mirrored, some plain
    with pytest.raises(ArgumentError, match='flip: "alternate" takes the place of a HorizontalFlip'):
        Cifar10DataLoader(
            str(tiny_folder), num_workers=0, download=False, augmentations=flip_only[1:], flip="alternate"
        )
    with pytest.raises(ArgumentError, match="flip: expected one of 'random', 'alternate', got 'sometimes'"):
        Cifar10DataLoader(str(tiny_folder), num_workers=0, download=False, flip="sometimes")


def test_a_run_with_the_alternating_flip_resumes_exactly(tmp_path, tiny_folder):
    from conftest import run_cli, tiny_config

    config = tiny_config(tmp_path, tiny_folder, epochs=3)
    changed = json.loads(config.read_text())
    changed["data_loader"]["args"]["flip"] = "alternate"
    config.write_text(json.dumps(changed))
    proc = run_cli("train.py", "-c", config)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run_dir,) = (tmp_path / "saved").glob("*/*")
    straight = torch.load(run_dir / "last.pth", weights_only=True)["state_dict"]
    resumed = run_cli("train.py", "--resume", run_dir / "checkpoint-epoch2.pth")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    again = torch.load(run_dir / "last.pth", weights_only=True)["state_dict"]
    assert all(torch.equal(t, again[k]) for k, t in straight.items())
