from abc import abstractmethod

import torch.nn as nn


class BaseModel(nn.Module):
    """Base class for all models."""

    @abstractmethod
    def forward(self, *inputs):
        raise NotImplementedError

    def num_params(self):
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def __str__(self):
        return super().__str__() + f"\nTrainable parameters: {self.num_params():,}"
