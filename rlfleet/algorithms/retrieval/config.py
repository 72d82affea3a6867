"""Retrieval-augmented agent hyperparameters (Goyal et al. 2022, "Retrieval-Augmented
Reinforcement Learning", Sec. 3 and App. B). Defaults are the paper's small-task settings
(4 slots, top-10 trajectories then top-10 steps, beta = 0.3); sizes are scaled for CPU."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from rlfleet.algorithms.r2d2.config import R2D2Config


class RetrievalConfig(BaseModel):
    """The retrieval process: what it attends over and how much it may pass to the agent."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    enabled: bool = Field(True, description="False = the plain recurrent agent (same network minus retrieval)")
    num_slots: int = Field(4, ge=1, description="n_f retrieval slots, each with its own memory m^k")
    slot_size: int = Field(64, ge=1, description="slot memory (and bottleneck z) size")
    summary_size: int = Field(64, ge=1, description="hidden size of the forward/backward trajectory GRUs")
    key_size: int = Field(32, ge=1, description="query/key size d of the attention")
    top_k_trajectories: int = Field(10, ge=1, description="keep the trajectories with the most attention mass")
    top_k_steps: int = Field(10, ge=1, description="then the steps with the most attention among them")
    bottleneck: bool = Field(True, description="z ~ N(mu(g), sigma(g)) with a KL to r(z|m_{t-1}); False = z = W g")
    beta: float = Field(0.3, ge=0, description="weight of the information-bottleneck KL term (KL averaged over z's dimensions and the slots)")
    retrieval_batch: int = Field(32, ge=1, description="trajectories in one uniformly sampled retrieval batch")
    source: Literal["batch", "index"] = Field(
        "batch", description="batch: attend inside a uniform retrieval batch (paper); index: ANN candidates over the whole dataset")
    index_candidates: int = Field(16, ge=1, description="index source: trajectories fetched per query row")
    refresh_s: float = Field(5.0, gt=0, description="index source: seconds between background re-embeddings")


class RDQNOfflineConfig(BaseModel):
    """Offline recurrent DQN over a fixed dataset of whole episodes (the paper's BabyAI baseline),
    optionally retrieval-augmented."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    n_step: int = Field(3, ge=1)
    gamma: float = Field(0.99, gt=0, le=1)
    value_rescaling: bool = Field(False, description="h(x) of R2D2; BabyAI rewards are in [0, 1]")
    double_q: bool = True
    cql_alpha: float = Field(1.0, ge=0, description=(
        "weight of the conservative term mean(logsumexp_a Q - Q(s, a_data)) (CQL(H), Kumar et al. 2020); "
        "0 = plain offline DQN"))
    batch_size: int = Field(32, ge=1, description="episodes per update")
    lr: float = Field(5e-4, gt=0)
    adam_eps: float = Field(1e-4, gt=0)
    max_grad_norm: float = Field(10.0, gt=0)
    target_tau: float = Field(0.01, gt=0, le=1, description="Polyak averaging of the target net every update")
    updates: int = Field(2000, ge=1)
    max_episode_len: int = Field(64, ge=2, description="longer episodes are cut into windows of this many steps")
    mlp_hidden: list[int] = Field(default_factory=lambda: [128], description="observation torso")
    embed_size: int = Field(64, ge=1, description="s_t: encoder output (sees obs, prev action, prev reward)")
    lstm_size: int = Field(128, ge=1)
    dueling: bool = True
    dueling_hidden: int = Field(64, ge=1)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)


class R2D2RetrievalConfig(R2D2Config):
    """R2D2 (all of its keys and defaults) plus the retrieval process over the learner's replay."""

    embed_size: int = Field(64, ge=1, description="s_t: encoder output (sees obs, prev action, prev reward)")
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
