"""Lookahead (Zhang et al., 2019) as airbench uses it (trainer.lookahead): every `every` optimizer
steps the slow copy of the weights (BatchNorm statistics included) moves a fraction `alpha` of the way
to the fast weights, and the fast weights restart from it. With `ramp`, the pull grows over training:
the fraction is 1 (plain training) at the first step and falls as the cube of training progress to
`alpha` at the last (airbench: 1 - 0.95^5 = 0.226); the final step makes the slow weights the
result."""

import torch


class Lookahead:
    def __init__(self, model, every, alpha, ramp, total_steps):
        self.model, self.every, self.alpha, self.ramp, self.total = model, every, alpha, ramp, total_steps
        self.slow = [t.detach().clone() for t in self._fast()]
        self.steps = 0

    def _fast(self):
        return [t for t in self.model.state_dict().values() if t.is_floating_point()]

    def fraction(self):
        """How far the slow weights move towards the fast ones at this step."""
        if not self.ramp:
            return self.alpha
        return 1.0 - (1.0 - self.alpha) * min(1.0, self.steps / self.total) ** 3

    @torch.no_grad()
    def step(self):
        """After each optimizer step."""
        self.steps += 1
        last = self.steps >= self.total
        if self.steps % self.every and not last:
            return
        fast = self._fast()
        if not last:  # at the end the slow weights are kept as they are (airbench)
            torch._foreach_lerp_(self.slow, fast, self.fraction())
        torch._foreach_copy_(fast, self.slow)

    def state_dict(self):
        return {"slow": [t.clone() for t in self.slow], "steps": self.steps}

    def load_state_dict(self, state):
        torch._foreach_copy_(self.slow, list(state["slow"]))
        self.steps = int(state["steps"])


def build_lookahead(model, cfg, total_steps):
    """The Lookahead of trainer.lookahead for `model`, or None when it is null."""
    if not cfg:
        return None
    return Lookahead(model, cfg["every"], cfg["alpha"], cfg["ramp"], total_steps)
