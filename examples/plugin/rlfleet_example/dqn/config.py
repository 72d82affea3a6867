"""The `algorithm:` section of the YAML (minus `name`); unknown keys are rejected."""
from pydantic import BaseModel, ConfigDict, Field


class DQNConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hidden: int = Field(64, ge=1, description="units of the two hidden layers")
    gamma: float = Field(0.99, gt=0, le=1)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(64, ge=1, description="transitions per update (rlfleet's learner reads this key)")
    target_update_period: int = Field(100, ge=1, description="updates between target-network copies")
