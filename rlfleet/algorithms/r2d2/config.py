"""R2D2 hyperparameters. Defaults are the paper's (Kapturowski et al. 2019, Table 2);
small tasks override them in YAML (see configs/quickstart.yaml)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class R2D2Config(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # sequences (Sec. 3): burn-in l, trace m, a new sequence every `period` steps
    burn_in: int = Field(40, ge=0, description="burn-in steps, unrolled without gradient")
    trace: int = Field(80, ge=1, description="steps that carry the loss")
    period: int = Field(40, ge=1, description="a new sequence starts every `period` steps")
    stored_state: bool = Field(True, description="start unrolls from the actor's stored state (False = zero state)")
    # target and loss
    n_step: int = Field(5, ge=1)
    gamma: float = Field(0.997, gt=0, le=1)
    value_rescaling: bool = Field(True, description="h(x) = sign(x)(sqrt(|x|+1)-1) + eps x")
    rescale_eps: float = Field(1e-3, gt=0)
    double_q: bool = True
    priority_eta: float = Field(0.9, ge=0, le=1, description="p = eta max|d| + (1-eta) mean|d|")
    # optimization
    batch_size: int = Field(64, ge=1, description="sequences per update")
    lr: float = Field(1e-4, gt=0)
    adam_eps: float = Field(1e-3, gt=0)
    lr_final: float | None = Field(None, gt=0, description="None = constant lr; else linear decay to this")
    lr_decay_updates: int = Field(100_000, ge=1, description="updates over which lr decays to lr_final")
    max_grad_norm: float = Field(40.0, gt=0)
    target_update_period: int = Field(2500, ge=1, description="updates between target-net copies")
    target_tau: float | None = Field(
        None, gt=0, le=1, description="None = hard copies (paper); else Polyak averaging every update")
    # network
    use_lstm: bool = Field(True, description="False = feed-forward ablation (same torso and head)")
    lstm_size: int = Field(512, ge=1)
    mlp_hidden: list[int] = Field(default_factory=lambda: [256], description="torso for vector observations")
    dueling: bool = True
    dueling_hidden: int = Field(512, ge=1)
