"""Algorithm-agnostic runtime: runners, replay shards, learner, driver, registry, config."""
