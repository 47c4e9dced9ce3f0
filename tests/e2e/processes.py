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


def processes() -> list[tuple[int, int, str]]:
    """(pid, ppid, command line) of every process, from /proc: `ps` output can be cut to the
    terminal width, which would lose the markers below."""
    rows = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = next(int(line.split()[1]) for line in (entry / "status").read_text().splitlines()
                        if line.startswith("PPid:"))
        except (OSError, StopIteration, ValueError):
            continue  # exited meanwhile
        rows.append((int(entry.name), ppid, args))
    return rows


def processes_naming(markers: tuple[str, ...]) -> set[int]:
    """The processes whose command line names one of `markers` (a node's temp dir), and all their
    descendants (workers, dashboard agents: their titles do not name the dir); never this one."""
    me = os.getpid()
    rows = processes()
    found = {pid for pid, _, args in rows if any(m in args for m in markers) and pid != me}
    grew = True
    while grew:
        children = {pid for pid, ppid, _ in rows if ppid in found and pid != me} - found
        found |= children
        grew = bool(children)
    return found


def stop_cluster(temp: Path, extra_markers: tuple[str, ...] = ()) -> None:
    """Stop this cluster only (`ray stop` would kill every Ray process on the machine): kill the
    processes whose command line names its temp dir, and all their descendants; then check that
    none is left (a leaked head would slow every later test and eat the machine's memory)."""
    import shutil
    import time

    markers = (str(temp),) + extra_markers
    for pid in processes_naming(markers):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.time() + 30
    while (left := processes_naming(markers)) and time.time() < deadline:
        time.sleep(0.5)
    shutil.rmtree(temp, ignore_errors=True)
    assert not left, f"cluster processes still running after SIGKILL: {sorted(left)}"


def ray_start(bin_dir: Path, args: list[str], env: dict[str, str], prefix: list[str] = ()) -> None:
    """`ray start ARGS` (a head, or a node joining one) with usage stats off; fails with its output.
    `prefix` runs it under another command (`unshare --mount ...`): the node's processes stay there."""
    cmd = [*prefix, str(bin_dir / "ray"), "start", "--disable-usage-stats", *args]
    start = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert start.returncode == 0, start.stdout + start.stderr


def raylet_of(temp: Path) -> int:
    """The pid of the raylet of the node started with --temp-dir `temp`."""
    for pid, _, args in processes():
        if args.split(" ", 1)[0].endswith("/raylet") and str(temp) in args:
            return pid
    raise LookupError(f"no raylet runs with temp dir {temp}")
