"""One interface over a trained network, whatever its file: a checkpoint of this project (PyTorch)
or an ONNX export (onnxruntime). Both take uint8 RGB pictures (N, H, W, 3) at the network's size
and return softmax probabilities; the checkpoint's data statistics and class names come with it,
so no dataset is needed."""

import json
from pathlib import Path

import numpy as np
import torch

from checkpoint.schema import check_contents
from config.networks import load_network
from data_loader.transforms import normalization
from model.tta import tta_logits
from utils.errors import CheckpointError

ONNX_INPUT = "pixels"  # float32 (N, 3, H, W), RGB values 0..255; the graph normalises them


class Normalized(torch.nn.Module):
    """`model` behind the normalisation it was trained with: takes RGB values 0..255 (float, NCHW)."""

    def __init__(self, model, stats):
        super().__init__()
        self.model = model
        mean, scale = normalization(stats)
        self.register_buffer("mean", mean)
        self.register_buffer("scale", scale)

    def forward(self, pixels):
        return self.model((pixels - self.mean) * self.scale)


def to_pixels(images):
    """uint8 (N, H, W, 3) -> float32 (N, 3, H, W) tensor of values 0..255."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()


def check_pictures(images, image_size):
    """`images` as the predictors take them: uint8 RGB (N, H, W, 3) at the network's (H, W). One
    picture (H, W, 3) becomes a batch of one; anything else is a ValueError saying what was expected
    (a float array in [0, 1] would otherwise be read as near-black pictures, and a picture of another
    size would be misread without a word)."""
    images = np.asarray(images)
    if images.ndim == 3 and images.shape[-1] == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected RGB pictures of shape (N, H, W, 3) or one (H, W, 3), got shape {images.shape}")
    if images.dtype != np.uint8:
        scale = (
            " (values 0..1: multiply by 255 first)" if images.size and 0 <= images.min() <= images.max() <= 1 else ""
        )
        raise ValueError(
            f"expected uint8 pictures (values 0..255), got {images.dtype}{scale}: convert with .astype('uint8')"
        )
    if tuple(images.shape[1:3]) != tuple(image_size):
        h, w = image_size
        raise ValueError(
            f"expected {w}x{h} pictures (the network's size), got {images.shape[2]}x{images.shape[1]}: resize them "
            "first (predict.py resizes image files itself)"
        )
    return images


class TorchPredictor:
    def __init__(self, path):
        trained = load_network(path, require=("data_stats", "classes"))
        self.path, self.ckpt = Path(path), trained.ckpt
        self.classes, self.image_size, self.stats = trained.classes, trained.image_size, trained.stats
        self.network = trained.model
        self.model = Normalized(self.network, self.stats).eval()

    @torch.no_grad()
    def logits(self, images, tta="none"):
        return tta_logits(self.model, to_pixels(check_pictures(images, self.image_size)), tta)

    def predict(self, images, tta="none"):
        return self.logits(images, tta).softmax(1).numpy()


class OnnxPredictor:
    """An export of export.py --format onnx / onnx-int8: normalisation inside the graph, the class
    names, data statistics and image size in its metadata."""

    def __init__(self, path, threads=0):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own classes for a missing or damaged file
            raise CheckpointError(f"{path}: not a readable ONNX model ({str(e).splitlines()[0][:160]})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if "classes" not in meta:
            raise CheckpointError(f"{path}: an ONNX model without this project's metadata (classes, image_size)")
        self.path = Path(path)
        entries = {}
        for key in ("classes", "image_size", "data_stats"):
            try:
                entries[key] = json.loads(meta[key])
            except (KeyError, ValueError):
                raise CheckpointError(
                    f"{path}: its metadata {key!r} is missing or not JSON; the file is damaged"
                ) from None
        check_contents(entries, path)  # the same kinds as a checkpoint's entries
        outputs = self.session.get_outputs()[0].shape[-1]
        if isinstance(outputs, int) and outputs != len(entries["classes"]):
            raise CheckpointError(
                f"{path}: names {len(entries['classes'])} classes, but its network has {outputs} outputs; "
                "the file is damaged"
            )
        self.classes, self.stats = entries["classes"], entries["data_stats"]
        self.image_size = tuple(entries["image_size"])
        graph = tuple(self.session.get_inputs()[0].shape[-2:])  # (H, W): numbers, or names where dynamic
        if all(isinstance(n, int) for n in graph) and graph != self.image_size:
            raise CheckpointError(
                f"{path}: its metadata says {self.image_size[1]}x{self.image_size[0]} images, its graph takes "
                f"{graph[1]}x{graph[0]}; the file is damaged"
            )

    def logits(self, images, tta="none"):
        def forward(x):
            return torch.from_numpy(self.session.run(None, {ONNX_INPUT: x.contiguous().numpy()})[0])

        return tta_logits(forward, to_pixels(check_pictures(images, self.image_size)), tta).numpy()

    def predict(self, images, tta="none"):
        return torch.from_numpy(self.logits(images, tta)).softmax(1).numpy()


def load_predictor(path, threads=0):
    """A TorchPredictor for a checkpoint, an OnnxPredictor for a .onnx file."""
    if str(path).lower().endswith(".onnx"):
        return OnnxPredictor(path, threads)
    return TorchPredictor(path)
