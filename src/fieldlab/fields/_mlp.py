"""The multilayer perceptron that most fields share: `num_layers` activated layers, then a linear head."""

from __future__ import annotations

import torch
import torch.nn as nn
from fieldlab._precision import exact_linear, full


class MLP(nn.Module):
    """in_dim → hidden_dim (activated, `num_layers` times) → out_dim (linear).

    Subclasses define `activation(z, layer_index)`, applied after every layer but the last, so a field
    can treat the first layer differently (SIREN's ω₀). Initialisation is the subclass's job.
    """

    def __init__(
        self,
        *,
        in_dim: int,
        out_dim: int,
        hidden_dim: int,
        num_layers: int,
    ):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * num_layers + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def activation(self, z: torch.Tensor, layer_index: int) -> torch.Tensor:
        """The nonlinearity after layer `layer_index`; periodic ones evaluate it in at least fp32 (`full(z)`)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The first layer stays in full precision under bf16 autocast and TF32: its outputs are large
        # phases (ω₀ z) whose rounding would show in the field, and at in_dim inputs it costs nothing.
        first = self.layers[0]
        with torch.autocast(x.device.type, enabled=False):
            x = self.activation(exact_linear(full(x), first.weight, first.bias), 0)
        for i, layer in enumerate(self.layers[1:-1], start=1):
            x = self.activation(layer(x), i)
        return self.layers[-1](x)


def sine_init_(mlp: MLP, omega0: float) -> None:
    """SIREN's initialisation (Sitzmann et al. 2020, Sec. 3.2).

    First layer: W ~ U(-1/in, 1/in), so that first_omega0·W spans several periods over [-1, 1].
    Later layers (the linear head too): W ~ U(-√(6/in)/ω₀, √(6/in)/ω₀), which keeps the pre-activations
    of sin(ω₀·z) standard-distributed. Biases keep PyTorch's default.
    """
    with torch.no_grad():
        for i, layer in enumerate(mlp.layers):
            fan_in = layer.in_features
            bound = 1.0 / fan_in if i == 0 else (6.0 / fan_in) ** 0.5 / omega0
            layer.weight.uniform_(-bound, bound)


class ReluMLP(MLP):
    """An MLP with ReLU activations and PyTorch's default initialisation (the head of encoded fields)."""

    def activation(self, z: torch.Tensor, layer_index: int) -> torch.Tensor:
        return torch.relu(z)
