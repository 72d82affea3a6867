"""QWeb acting: one batched forward step over a runner's env slots, eps-greedy among legal actions."""
from __future__ import annotations

from rlfleet.algorithms.qweb.config import QWebConfig
from rlfleet.algorithms.qweb.networks import QWebNetwork
from rlfleet.algorithms.r2d2.policy import R2D2Policy


class QWebPolicy(R2D2Policy):
    """R2D2's acting loop (masked argmax, per-slot epsilon) on the QWeb network, run in torch."""

    def __init__(self, cfg: QWebConfig, env_spec):
        self.net = QWebNetwork(env_spec.obs_shape, env_spec.num_actions, cfg).eval()
        self.num_actions = env_spec.num_actions
        self._fast = None

    def _refresh(self) -> None:
        self._fast = None
