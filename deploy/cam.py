"""Grad-CAM (Selvaraju et al., 2017) with Captum's LayerGradCam: where in the picture the last
convolution stage (C4, 8x8 for 32x32 inputs) saw evidence for a class. Heat maps are upsampled to
the picture's size and scaled to [0, 1] per picture."""

import functools

import numpy as np
import torch

from deploy.predictor import Normalized, to_pixels


def last_stage(network):
    """The module whose output Grad-CAM explains: the last stage before global pooling."""
    return (
        network.c4 if hasattr(network, "c4") else [m for m in network.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    )


def grad_cam(network, stats, images, classes, batch=64):
    """Heat maps (N, H, W) in [0, 1] for uint8 pictures `images` (N, H, W, 3) and the class index
    `classes[i]` of each; `network` takes inputs normalised with `stats` (mean, std)."""
    from captum.attr import LayerAttribution, LayerGradCam

    model = Normalized(network, stats).eval()
    cam = LayerGradCam(model, last_stage(network))
    maps = []
    for i in range(0, len(images), batch):
        x = to_pixels(images[i : i + batch]).requires_grad_(True)
        target = torch.as_tensor(np.asarray(classes[i : i + batch]), dtype=torch.long)
        attr = cam.attribute(x, target=target, relu_attributions=True)
        attr = LayerAttribution.interpolate(attr, tuple(x.shape[-2:]), interpolate_mode="bilinear")
        attr = attr[:, 0].detach()
        peak = attr.flatten(1).max(1).values.clamp_min(1e-12)
        maps.append((attr / peak[:, None, None]).numpy())
    return np.concatenate(maps) if maps else np.zeros((0, *images.shape[1:3]))


def confident_mistakes(targets, probs, count):
    """Indices of the `count` wrong predictions with the highest probability, most confident first."""
    predictions = probs.argmax(1)
    wrong = np.flatnonzero(predictions != targets)
    return wrong[np.argsort(-probs[wrong, predictions[wrong]])][:count]


def mistake_cams_for(network, stats):
    """logger.run_report's mistake_cams hook for `network` (normalised with `stats`)."""
    return functools.partial(plot_mistake_cams, network, stats)


def plot_mistake_cams(network, stats, images, targets, probs, classes, path, count=12, names=None):
    """A picture of the `count` most confident mistakes, each with the Grad-CAM of the class it was
    wrongly given (where the network saw that class), captioned with its file name (as the
    misclassified grid is; its index without names), true / predicted."""
    from logger.plots import plot_cam

    targets, probs = np.asarray(targets), np.asarray(probs)
    wrong = confident_mistakes(targets, probs, count)
    predicted = probs[wrong].argmax(1)
    heat = grad_cam(network.cpu().eval(), stats, images[wrong], predicted)
    titles = [
        f"{names[i] if names is not None else f'#{i}'}: true {classes[targets[i]]}\npred {classes[p]} {probs[i, p]:.0%}"
        for i, p in zip(wrong, predicted)
    ]
    title = f"Grad-CAM of the predicted class: the {len(wrong)} most confident mistakes"
    return plot_cam(images[wrong], heat, titles, path, title)
