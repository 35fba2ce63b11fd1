"""Losses by name. The config's `loss` section names a class here or in torch.nn, e.g.
{"type": "CrossEntropyLoss", "args": {"label_smoothing": 0.1}}."""
