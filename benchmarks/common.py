"""Shared helpers for benchmark scripts: the results-file format of shared/notes/results-format.md."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": gpu}


def command_line(name: str, argv: list[str] | None = None) -> str:
    """How benchmarks/<name>.py was invoked (rows that outlive their run keep it)."""
    return "python " + " ".join([f"benchmarks/{name}.py"] + (sys.argv[1:] if argv is None else argv))


def write_results(name: str, rows: list[dict], summary: dict, argv: list[str] | None = None,
                  file_name: str | None = None) -> Path:
    """benchmarks/results/NAME.json (or FILE_NAME.json: a second results file of script NAME)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {
        "benchmark": name,
        "command": command_line(name, argv),
        "git_commit": git_commit(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "rows": rows,
        "summary": summary,
    }
    path = RESULTS / f"{file_name or name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=1))
    os.replace(tmp, path)
    return path


def previous_rows(name: str) -> list[dict]:
    """The rows of benchmarks/results/NAME.json, [] if there is none (scripts that re-run a subset keep the rest)."""
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text())["rows"] if path.is_file() else []


def table(rows: list[list], header: list[str]) -> str:
    cells = [header] + [["-" if c is None else (f"{c:.1f}" if isinstance(c, float) else str(c)) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def synthetic_batch(cfg, spec, device, first_fraction: float = 0.0) -> dict:
    """An R2D2 training batch of random data shaped like replay's (uint8 frames or float vectors);
    `first_fraction` of its sequences start their episode (FIRST: their burn-in is trained too)."""
    import torch

    from rlfleet.platform import batch as B

    b, t = cfg.batch_size, cfg.burn_in + cfg.trace
    g = torch.Generator(device="cpu").manual_seed(0)
    if spec.obs_dtype == "uint8":
        obs = torch.randint(0, 255, (b, t + 1) + spec.obs_shape, generator=g, dtype=torch.uint8)
    else:
        obs = torch.randn((b, t + 1) + spec.obs_shape, generator=g)
    batch = {B.OBS: obs, B.PREV_ACTION: torch.randint(0, spec.num_actions, (b, t + 1), generator=g),
             B.PREV_REWARD: torch.rand(b, t + 1, generator=g),
             B.ACTION: torch.randint(0, spec.num_actions, (b, t), generator=g),
             B.REWARD: torch.rand(b, t, generator=g), B.TERMINAL: (torch.rand(b, t, generator=g) < 0.01).float(),
             B.MASK: torch.ones(b, t), B.WEIGHT: torch.rand(b, generator=g),
             B.FIRST: (torch.arange(b) < round(first_fraction * b)).float()}
    if cfg.use_lstm:
        batch[B.state_key(0)] = torch.zeros(b, cfg.lstm_size)
        batch[B.state_key(1)] = torch.zeros(b, cfg.lstm_size)
    return {k: v.to(device) for k, v in batch.items()}


def run_main(main) -> None:
    """Run a benchmark's main() and exit with its code; a user error (a bad `--set` key, an unknown env,
    a run directory that is not one) is one line on stderr and exit 2, as with the `rlfleet` CLI."""
    from rlfleet.platform.errors import UserError

    try:
        code = main()
    except UserError as e:
        print(f"{Path(sys.argv[0]).name}: error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)
