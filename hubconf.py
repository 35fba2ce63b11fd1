"""torch.hub entry points: the shipped network in one line, from a clone or a hosted copy.

    model = torch.hub.load("path/to/clone", "dilatednet", source="local", pretrained=True)
    model.classes        # ['airplane', 'automobile', ...]
    model.normalization  # {"mean": [...], "std": [...]} in [0, 1] units, for torchvision's Normalize

The model is in eval mode and takes normalised (N, 3, 32, 32) float tensors; it returns logits.
deploy.load_predictor(path) is the same for any checkpoint, export or ONNX file of this project,
taking uint8 pictures and returning probabilities.
"""

from pathlib import Path

dependencies = ["torch", "albumentations", "pydantic"]

PRETRAINED = Path(__file__).resolve().parent / "pretrained" / "cifar10_dilatednet.pth"


def dilatednet(pretrained: bool = True, weights: str | None = None):
    """config.json's network: with the shipped weights (pretrained=True), the weights of another
    checkpoint or export of this project (`weights`: its path), or freshly initialised
    (pretrained=False: no class names or normalisation attached)."""
    if pretrained or weights:
        from config.networks import load_network

        trained = load_network(weights or PRETRAINED, require=("data_stats", "classes"))
        model = trained.model
        model.classes, model.normalization = trained.classes, dict(trained.stats)
        return model.eval()
    from config.parser import ConfigParser
    from config.reading import load_config

    return ConfigParser(load_config(Path(__file__).resolve().parent / "config.json")).init_obj("arch")
