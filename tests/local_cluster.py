"""A multi-node Ray cluster on this machine for tests: `ray start --block` subprocesses, one per node.

Each node gets its own --temp-dir under one private folder, its own ports and token auth on (a fresh
token file passed through RAY_AUTH_MODE=token + RAY_AUTH_TOKEN_PATH, never ~/.ray/auth_token).
Teardown ends exactly this cluster's processes by PID: the `ray start` processes, everything whose
command line names the private folder, and their descendants, remembered across the test so a
process orphaned by a killed raylet is found too. It never runs `ray stop`, which would end every
Ray instance of the user on the machine.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path


def _proc_table() -> dict[int, tuple[int, str, int]]:
    """pid -> (ppid, command line, start time) of live processes, from /proc (psutil is not a
    dependency); zombies are left out: they are dead and only wait to be reaped."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state, ppid, ...
        if fields[0] != "Z":
            table[int(entry)] = (int(fields[1]), cmd, int(fields[19]))
    return table


def _descendants(table: dict, roots: set[int]) -> set[int]:
    found, frontier = set(roots), set(roots)
    while frontier:
        frontier = {pid for pid, (ppid, _, _) in table.items() if ppid in frontier} - found
        found |= frontier
    return found


class LocalCluster:
    """Head + worker nodes of one Ray cluster, all on this machine (see module docstring)."""

    def __init__(self, port: int = 6391, dashboard_port: int = 8275, worker_port_base: int = 21000):
        self.root = Path(tempfile.mkdtemp(prefix="rlfc-", dir="/tmp"))  # short: Ray's socket paths are limited
        self.port, self.dashboard_port, self.worker_port_base = port, dashboard_port, worker_port_base
        self.token_file = self.root / "auth_token"
        self.token_file.write_text(secrets.token_hex(32))
        self.token_file.chmod(0o600)
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_file),
                    "RAY_DEDUP_LOGS": "0", "RAY_DASHBOARD_STARTUP_TIMEOUT_S": "300"}
        for var in ("RAY_ADDRESS", "RAY_AUTH_TOKEN"):
            self.env.pop(var, None)
        self.nodes: dict[str, subprocess.Popen] = {}
        self.seen: dict[int, int] = {}  # pid -> start time, of every process that belonged to the cluster

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start_node(self, name: str, num_cpus: float, resources: dict, attempts: int = 2) -> None:
        """Start node `name` (the first one is the head) and wait until it has joined the cluster.
        On a loaded machine a raylet can miss Ray's fixed 30 s registration window: then retry."""
        for attempt in range(attempts):
            try:
                return self._start_node(name, num_cpus, resources)
            except RuntimeError:
                self._stop(self._owned(_proc_table(), name), [self.nodes.pop(name)])
                if attempt == attempts - 1:
                    raise

    def _start_node(self, name: str, num_cpus: float, resources: dict, timeout: float = 240.0) -> None:
        index = len(self.nodes)
        ports = self.worker_port_base + 100 * index
        cmd = ["ray", "start", "--block", f"--num-cpus={num_cpus}", f"--resources={json.dumps(resources)}",
               f"--temp-dir={self.root / name}", f"--min-worker-port={ports}", f"--max-worker-port={ports + 99}",
               f"--dashboard-agent-listen-port={self.port + 46000 + index}", "--disable-usage-stats"]
        if index == 0:
            cmd += ["--head", f"--port={self.port}", "--dashboard-host=127.0.0.1",
                    f"--dashboard-port={self.dashboard_port}", f"--ray-client-server-port={self.port + 4000}",
                    # notice a dead node within ~3 s rather than the default ~30 s
                    '--system-config={"health_check_period_ms": 1000, "health_check_failure_threshold": 3}']
        else:
            cmd += [f"--address={self.gcs_address}"]
        log = open(self.root / f"{name}.log", "w")
        self.nodes[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                            start_new_session=True)
        deadline = time.time() + timeout
        while "Ray runtime started" not in (self.root / f"{name}.log").read_text():
            if self.nodes[name].poll() is not None or time.time() > deadline:
                raise RuntimeError(f"ray node {name} did not start:\n{(self.root / f'{name}.log').read_text()[-3000:]}")
            time.sleep(0.5)
        self._remember()

    def _owned(self, table: dict, name: str | None = None) -> set[int]:
        """This cluster's processes (or node `name`'s): its `ray start`s, whatever names its folder, and their children."""
        marker = f"{self.root / name}/" if name else str(self.root)
        roots = {p.pid for n, p in self.nodes.items() if name in (None, n) and p.pid in table}
        roots |= {pid for pid, (_, cmd, _) in table.items() if marker in cmd}
        return _descendants(table, roots)

    def _remember(self) -> None:
        table = _proc_table()
        for pid in self._owned(table):
            self.seen.setdefault(pid, table[pid][2])

    def raylet_pid(self, name: str) -> int:
        """The raylet of node `name` (its command line names the node's temp dir)."""
        marker = f"{self.root / name}/"
        for pid, (_, cmd, _) in _proc_table().items():
            if "/raylet " in f"{cmd.split(' ')[0]} " and marker in cmd:
                return pid
        raise RuntimeError(f"no raylet for node {name}")

    def kill_node(self, name: str) -> None:
        """Simulate a machine failure: SIGKILL the node's raylet (its workers then exit on their own)."""
        self._remember()
        os.kill(self.raylet_pid(name), signal.SIGKILL)

    def alive_pids(self) -> list[int]:
        table = _proc_table()
        return sorted(pid for pid, start in self.seen.items() if pid in table and table[pid][2] == start)

    def shutdown(self) -> None:
        self._remember()
        self._stop(set(self.seen), list(self.nodes.values()))
        shutil.rmtree(self.root, ignore_errors=True)

    def _stop(self, pids: set[int], starters: list[subprocess.Popen]) -> None:
        """SIGTERM the `ray start --block` processes (they end their node's processes), then
        SIGKILL whatever of `pids` is still the same process after 20 s."""
        table = _proc_table()
        known = {pid: table[pid][2] for pid in pids if pid in table}
        for proc in starters:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

        def alive():
            now = _proc_table()
            return [pid for pid, start in known.items() if pid in now and now[pid][2] == start]

        deadline = time.time() + 20
        while alive() and time.time() < deadline:
            time.sleep(0.5)
        for pid in alive():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in starters:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
