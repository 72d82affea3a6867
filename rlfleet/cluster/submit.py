"""`rlfleet submit`: run an experiment (or a sweep) on a Ray cluster through the Ray Jobs API.

The job carries the project with it: runtime_env `py_modules` uploads this rlfleet package and
`working_dir` a staging folder holding the config (with the --set overrides applied), so the cluster
needs rlfleet's dependencies (ray, torch, gymnasium, ...) but not rlfleet itself. The job's driver runs
on the head node and attaches to the cluster through the RAY_ADDRESS the Jobs API sets for it.

Token authentication (on by default in Ray 2.60): the Jobs SDK sends the token that Ray finds in
RAY_AUTH_TOKEN, else the file named by RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token.
"""
from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

import rlfleet
from rlfleet.platform.auth import enable_token_auth_if_available
from rlfleet.platform.config import load_config
from rlfleet.platform.errors import UserError

CONFIG_NAME = "experiment.yaml"
DEFAULT_ADDRESS = "http://127.0.0.1:8265"


def job_address(address: str | None) -> str:
    """The dashboard's HTTP address: --address, else RAY_ADDRESS, else the local default."""
    address = address or os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS
    return address if "://" in address else f"http://{address}"


def prepare(config: str, overrides: list[str] | None) -> tuple[dict, str]:
    """Validate here, before anything is sent; return (resolved config to ship, rlfleet command)."""
    cfg, _, resolved = load_config(config, overrides)
    return resolved, "sweep" if cfg.sweep is not None else "train"


def job_runtime_env(resolved: dict, stage: str) -> dict:
    """The job carries the staged config, this rlfleet package, the config's runtime_env and the
    modules of plugins (envs/algorithms) that live outside installed packages on this machine."""
    from rlfleet.platform.config import build_config
    from rlfleet.platform.placement import actor_runtime_env

    cfg, _ = build_config(resolved)
    own = actor_runtime_env(cfg)  # the job's actors get runtime_env.working_dir; its driver runs in `stage`
    env = {**own, "working_dir": stage, "excludes": ["__pycache__", *own.get("excludes", [])]}
    env["py_modules"] = [str(Path(rlfleet.__file__).parent), *own.get("py_modules", [])]
    return env


def _client(address: str):
    from ray.job_submission import JobSubmissionClient

    enable_token_auth_if_available()
    try:
        return JobSubmissionClient(address)
    except Exception as e:  # connection refused, wrong address, auth refused: one line, not a traceback
        msg = " ".join(str(e).split())
        raise UserError(f"cannot use the Ray Jobs API at {address}: {type(e).__name__}: {msg[:400]}") from None


async def _follow(client, job_id: str) -> None:
    async for lines in client.tail_job_logs(job_id):
        sys.stdout.write(lines)
        sys.stdout.flush()


def submit(config: str, overrides: list[str] | None, address: str | None, wait: bool = True) -> int:
    """Submit; with `wait`, stream the job's logs and return 0 if it succeeded, 1 otherwise."""
    from ray.job_submission import JobStatus

    resolved, command = prepare(config, overrides)
    address = job_address(address)
    client = _client(address)
    if not Path(resolved["logging"]["root"]).is_absolute():
        print(f"rlfleet: note: logging.root is relative ({resolved['logging']['root']!r}): the run directory will be "
              "inside the job's working dir on the head node; --set logging.root=/abs/path keeps it", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="rlfleet-job-") as stage:
        (Path(stage) / CONFIG_NAME).write_text(yaml.safe_dump(resolved, sort_keys=False))
        job_id = client.submit_job(
            entrypoint=f"python -m rlfleet {command} {CONFIG_NAME}",
            runtime_env=job_runtime_env(resolved, stage),
            metadata={"rlfleet_config": Path(config).name, "rlfleet_command": command})
    print(job_id, flush=True)
    if not wait:
        return 0
    print(f"rlfleet: following job {job_id} at {address} (Ctrl-C stops following, not the job)", file=sys.stderr)
    try:
        asyncio.run(_follow(client, job_id))
        status = client.get_job_status(job_id)
        while not status.is_terminal():  # the log stream can close just before the status flips
            time.sleep(1)
            status = client.get_job_status(job_id)
    except KeyboardInterrupt:
        print(f"rlfleet: stopped following; the job keeps running (ray job stop {job_id} --address {address})",
              file=sys.stderr)
        return 130
    if status != JobStatus.SUCCEEDED:
        message = (client.get_job_info(job_id).message or "").strip().splitlines()  # its log tail was shown above
        print(f"rlfleet: job {job_id} {status.value}: {message[0] if message else ''}", file=sys.stderr)
        return 1
    print(f"rlfleet: job {job_id} SUCCEEDED", file=sys.stderr)
    return 0
