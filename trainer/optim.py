"""The optimizer of a run (config "optimizer") over the network's trainable parameters."""


def build_optimizer(config, model):
    """config "optimizer" over the parameters of `model` that train (requires_grad)."""
    return config.init_obj("optimizer", [p for p in model.parameters() if p.requires_grad])
