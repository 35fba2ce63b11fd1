"""ONNX export of a trained network: the checkpoint's normalisation inside the graph (input: RGB
values 0..255, float32 NCHW, any batch size), its class names, data statistics and image size in
the model's metadata; a check that onnxruntime and PyTorch agree; static int8 quantization (QDQ)
calibrated on training images."""

import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from base.base_data_loader import pictures
from checkpoint.schema import saved_entries
from deploy.predictor import ONNX_INPUT, OnnxPredictor, to_pixels
from utils.errors import CheckpointError, ConfigError
from utils.paths import atomic_write

OPSET = 18
CALIBRATION_IMAGES = 512  # training pictures int8 is calibrated on


def _save_with_metadata(model_proto, out, predictor):
    import onnx

    del model_proto.metadata_props[:]
    for key, value in (
        ("classes", predictor.classes),
        ("image_size", list(predictor.image_size)),
        ("data_stats", predictor.stats),
        ("input", "float32 (N, 3, H, W) RGB values 0..255; the graph normalises them"),
    ):
        entry = model_proto.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
    with atomic_write(out) as tmp:
        onnx.save_model(model_proto, str(tmp))  # one file: the weights inside, not as external data


def export_onnx(predictor, out):
    """Write `predictor.model` (a TorchPredictor's network behind its normalisation) to `out`."""
    import onnx

    h, w = predictor.image_size
    example = torch.rand(2, 3, h, w) * 255
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        path = Path(tmp) / "model.onnx"
        torch.onnx.export(
            predictor.model,
            (example,),
            str(path),
            input_names=[ONNX_INPUT],
            output_names=["logits"],
            dynamic_shapes={ONNX_INPUT: {0: torch.export.Dim("batch")}},
            opset_version=OPSET,
            dynamo=True,
            verbose=False,
        )
        _save_with_metadata(onnx.load(str(path)), out, predictor)


def compare(predictor, onnx_path, images):
    """(max abs logit difference, whether every argmax agrees) of PyTorch and onnxruntime on `images`."""
    ours = predictor.logits(images).numpy()
    theirs = OnnxPredictor(onnx_path).logits(images)
    return float(np.abs(ours - theirs).max()), bool((ours.argmax(1) == theirs.argmax(1)).all())


class _Calibration:
    """onnxruntime's CalibrationDataReader protocol over uint8 pictures, in batches."""

    def __init__(self, images, batch=64):
        self.batches = iter([images[i : i + batch] for i in range(0, len(images), batch)])

    def get_next(self):
        batch = next(self.batches, None)
        return None if batch is None else {ONNX_INPUT: to_pixels(batch).numpy()}


def quantize_int8(fp32_path, out, calibration_images, per_channel=True):
    """Static int8 quantization (QDQ; weights int8 per channel, activations uint8 per tensor),
    calibrated with MinMax on `calibration_images` (uint8 NHWC). Metadata is carried over. uint8
    activations with int8 weights are the pair x86 CPUs have fast kernels for: with int8 activations
    the model ran 3x slower than fp32, with uint8 ones 1.7x faster (docs/speed.md)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantized = Path(tmp) / "int8.onnx"
        quantize_static(
            str(prepared),
            str(quantized),
            _Calibration(calibration_images),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        proto = onnx.load(str(quantized))
        source = onnx.load(str(fp32_path))
        meta = {p.key: p.value for p in source.metadata_props}
        if "classes" not in meta:
            raise CheckpointError(f"{fp32_path}: an ONNX model without this project's metadata")
        del proto.metadata_props[:]
        for key, value in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        with atomic_write(out) as tmp_out:
            onnx.save_model(proto, str(tmp_out))


def run_images(predictor, data_dir):
    """(training pictures, validation pictures, validation labels) of the run's own split, as uint8."""
    from config.parser import ConfigParser

    overrides = {("data_loader", "args", "data_dir"): data_dir} if data_dir else None
    config = ConfigParser(saved_entries(predictor.ckpt).config, None, overrides)
    loader = config.init_obj("data_loader")
    valid = loader.split_validation()
    if valid is None:
        raise ConfigError("the checkpoint's run has no validation split to measure int8 on: give --data_dir")
    if pictures(loader) is None or pictures(valid) is None:
        raise ConfigError(
            f"data_loader.type: {type(loader).__name__} keeps no uint8 pictures (`images`) to calibrate int8 on"
        )
    return pictures(loader), pictures(valid), np.asarray(valid.dataset.labels)


def calibration_set(train_images):
    """The training pictures int8 is calibrated on: CALIBRATION_IMAGES of them, always the same."""
    rng = np.random.default_rng(0)
    return train_images[rng.choice(len(train_images), min(CALIBRATION_IMAGES, len(train_images)), False)]


def accuracy(predictor, images, labels, batch=500):
    """Exact percentage of `images` whose top class is their label."""
    hits = 0
    for i in range(0, len(images), batch):
        hits += int((np.asarray(predictor.logits(images[i : i + batch])).argmax(1) == labels[i : i + batch]).sum())
    return 100.0 * hits / len(images)
