"""One-step DQN (Mnih et al. 2015, with a double-Q target) as an rlfleet plugin algorithm.

An algorithm is four pieces, as in rlfleet/algorithms/r2d2/: a config model (the YAML section),
a network, an acting policy (CPU, inside runner actors) and a learner core (loss + optimizer,
inside the learner actor). `SPEC` ties them together; the entry point `rlfleet.algorithms` points
at it (see ../../pyproject.toml), so `algorithm: {name: dqn-example}` works in any YAML.
"""
from rlfleet import AlgorithmSpec
from rlfleet.platform.batch import SequenceLayout
from rlfleet_example.dqn.config import DQNConfig
from rlfleet_example.dqn.learner import DQNLearner
from rlfleet_example.dqn.policy import DQNPolicy

SPEC = AlgorithmSpec(
    name="dqn-example",
    config_cls=DQNConfig,
    make_policy=DQNPolicy,
    make_learner=DQNLearner,
    # one transition per stored sequence: no burn-in, a trace of 1 step, a new sequence every step
    sequence_layout=lambda cfg: SequenceLayout(burn_in=0, trace=1, period=1),
    description="one-step double DQN, feed-forward (example plugin)",
)
