"""MAMQL hyperparameters: the authors' code's defaults (see shared spec mamql.md), plus the
variant switch for behaviour cloning."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator


class MAMQLConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    demos: str = Field(description="demonstrations file (rlfleet demos record); read by the learner")
    demo_steps: int | None = Field(None, ge=1, description="use only the first N expert env steps of the file")
    objective: Literal["mamql", "iql-ma", "bc"] = Field(
        "mamql", description="mamql = inverse soft-Q (IQ-Learn chi^2) per agent, critic on the agent's own "
        "actions; iql-ma = the same with a critic that also sees the others' actions; bc = behaviour cloning")
    alpha: float = Field(1.0, gt=0, description="entropy temperature: pi ~ exp(Q / alpha), V = alpha logsumexp(Q / alpha)")
    gamma: float = Field(0.99, gt=0, le=1)
    value_data: Literal["expert_and_online", "online"] = Field(
        "expert_and_online", description="rows of the value term E[V(s) - gamma V(s')]: online and expert rows "
        "(IQ-Learn's online default; on expert states it is the expert actions' log-likelihood) or online rows "
        "only (the MAMQL authors' code, which preloads its replay with the demonstrations)")
    batch_size: int = Field(256, ge=1, description="online transitions per update (and as many expert ones)")
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0, description="L2 penalty on the critic's weights")
    hidden: list[int] = Field(default_factory=lambda: [256, 256])
    torso: Literal["mlp", "conv", "entities"] = Field(
        "mlp", description="mlp = MLP on the flattened observation; conv = conv layers on the observation's leading "
        "C x H x W map (map_shape), then the MLP on their output with the rest of the observation (e.g. a time "
        "feature, the one-hot agent index) appended; entities = a transformer over the map's nonzero cells (tokens: "
        "channel, row, column) and one token for the rest of the observation, then the MLP (sparse maps)")
    map_shape: list[int] | None = Field(None, min_length=3, max_length=3, description="torso conv / entities: the "
                                        "C x H x W map the flattened observation starts with (Gems: env.map_shape)")
    conv_channels: list[int] = Field(default_factory=lambda: [16, 32, 32], min_length=1, description="torso conv: "
                                     "channels of its 3x3 conv layers")
    conv_strides: list[int] | None = Field(None, description="torso conv: stride of each conv layer (default: the "
                                           "first 1, the others 2)")
    entity_dim: int = Field(64, ge=8, description="torso entities: token width")
    entity_layers: int = Field(3, ge=1, description="torso entities: transformer encoder layers")
    entity_heads: int = Field(4, ge=1, description="torso entities: attention heads (divides entity_dim)")
    max_entities: int = Field(16, ge=1, description="torso entities: the most nonzero map cells an observation may "
                              "have (more is an error, not a silent crop)")
    max_grad_norm: float = Field(10.0, gt=0)
    acting_polyak: float = Field(0.0, ge=0, le=1, description="act (and evaluate, and load agents) with a Polyak "
                                 "average of the critic, avg <- (1 - tau) avg + tau critic after every update, "
                                 "tau = this; 0 = the critic itself. Smooths the swings of the greedy policy "
                                 "between checkpoints")
    augment: str | None = Field(None, description="'module:function' applied to every sampled batch of expert rows, "
                                "fn(rows, map_shape, generator) -> rows (e.g. rlfleet.envs.games.gems_v0:"
                                "symmetry_augment: the grid's 8 symmetries)")


    @field_validator("entity_heads")
    @classmethod
    def _heads_divide_width(cls, heads: int, info: ValidationInfo) -> int:
        dim = info.data.get("entity_dim")
        if dim and dim % heads:
            raise ValueError(f"must divide entity_dim {dim}")
        return heads


class IQLMAConfig(MAMQLConfig):
    """Registry entry `iql-ma`: per-agent IQ-Learn whose critic also sees the others' actions."""

    objective: Literal["iql-ma"] = "iql-ma"


class BCConfig(MAMQLConfig):
    """Registry entry `bc`: behaviour cloning (cross-entropy on the expert's actions)."""

    objective: Literal["bc"] = "bc"
