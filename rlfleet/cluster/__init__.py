"""Deployment: `rlfleet submit` (Ray Jobs) and cluster templates shipped as package data.

Templates (copy one, fill in the marked fields): aws.yaml, gcp.yaml, local.yaml (Ray cluster launcher:
`ray up FILE`), kuberay-raycluster.yaml and kuberay-rayjob.yaml (`kubectl apply -f FILE`). See
docs/cluster.md.
"""
from pathlib import Path

TEMPLATES = ("aws.yaml", "gcp.yaml", "local.yaml", "kuberay-raycluster.yaml", "kuberay-rayjob.yaml")


def template_path(name: str) -> Path:
    """Where an installed template lives (they ship inside the package)."""
    return Path(__file__).with_name(name)
