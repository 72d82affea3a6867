"""Small multi-agent games re-created from papers (PettingZoo Parallel envs; `pz:rlfleet.envs.games.<name>`)."""
