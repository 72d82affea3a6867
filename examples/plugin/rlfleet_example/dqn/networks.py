import torch
from torch import nn


class QNetwork(nn.Module):
    """obs [..., D] -> Q [..., A]."""

    def __init__(self, obs_dim: int, num_actions: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, num_actions))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs.flatten(start_dim=obs.dim() - 1).float())
