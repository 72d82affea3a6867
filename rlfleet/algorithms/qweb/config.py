"""QWeb hyperparameters (Gur et al., ICLR 2019). The learner is R2D2's (n-step double Q over
stored sequences, prioritized replay), so the R2D2 keys apply; defaults suit MiniWoB's short
episodes (a handful of steps, rewards in [-1, 1]: no value rescaling)."""
from __future__ import annotations

from pydantic import Field

from rlfleet.algorithms.r2d2.config import R2D2Config


class QWebConfig(R2D2Config):
    burn_in: int = Field(0, ge=0, description="burn-in steps, unrolled without gradient")
    trace: int = Field(8, ge=1, description="steps that carry the loss")
    period: int = Field(4, ge=1, description="a new sequence starts every `period` steps")
    n_step: int = Field(3, ge=1)
    gamma: float = Field(0.95, gt=0, le=1)
    value_rescaling: bool = Field(False, description="rewards are in [-1, 1]: no rescaling needed")
    batch_size: int = Field(32, ge=1, description="sequences per update")
    lr: float = Field(5e-4, gt=0)
    target_tau: float | None = Field(0.01, gt=0, le=1, description="Polyak target averaging (None = hard copies)")
    use_lstm: bool = Field(False, description="True: an LSTM over the page summary carries memory across steps")
    lstm_size: int = Field(64, ge=1, description="size of the core (LSTM or feed-forward) state")
    embed_dim: int = Field(32, ge=1, description="word-token embedding size")
    hidden: int = Field(64, ge=1, description="element, field and pair encoder width")
