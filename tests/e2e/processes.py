"""Process and port helpers of the end-to-end tests: each acts only on what a test started."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_addresses(port: int) -> set[str]:
    """The addresses something listens on at `port` on this machine."""
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout
    return {line.split()[3].rsplit(":", 1)[0] for line in out.splitlines() if line.strip()}


def in_this_runtime(pid: str) -> bool:
    """A worker of this test session's Ray runtime (its workers get RAY_ADDRESS=<our GCS>)."""
    import ray

    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    port = ray.get_runtime_context().gcs_address.rsplit(":", 1)[1]
    return any(e.startswith(b"RAY_ADDRESS=") and e.endswith(f":{port}".encode()) for e in environ)


def kill_processes_working_under(folder: Path) -> list[int]:
    """SIGKILL every process whose working directory is `folder` or below (what a killed sweep
    driver left: its Ray runtime ran there, its trial actors in the trial folders), except this
    one. Returns their ids."""
    root = str(folder.resolve())
    killed = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue  # exited meanwhile, or not ours to read
        if cwd == root or cwd.startswith(root + os.sep):
            try:
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
            except OSError:
                pass
    return killed
