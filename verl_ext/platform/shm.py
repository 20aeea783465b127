"""Shared-memory segments a run leaves in /dev/shm, and the processes it leaves running.

vLLM's message queues (``psm_*``), multiprocessing's named semaphores (``sem.mp-*``) and verl's weight buckets
(``verl_weights_*``) are unlinked by the process that created them when it exits cleanly; a process killed on the
way out (vLLM's workers die by PDEATHSIG when their parent goes) leaves them behind, 64 MB at a time for a bucket.
``remove_orphans`` removes the ones that appeared since a snapshot and that no live process maps or holds open, so
the segments of another run on the same machine, which its processes still map, are never touched.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

SHM = Path("/dev/shm")
PREFIXES = ("psm_", "sem.mp-", "verl_weights_")


def snapshot(root: Path = SHM) -> set[str]:
    """Names of the run-owned kinds of segment now in ``root``."""
    if not root.is_dir():
        return set()
    return {p.name for p in root.iterdir() if p.name.startswith(PREFIXES)}


def in_use(root: Path = SHM) -> set[str]:
    """Names under ``root`` that some live process maps or holds open (read from /proc).

    Matched by inode, not by path: a named semaphore is built under a temporary name, mapped, then linked to its
    ``sem.mp-*`` name, so /proc/PID/maps shows the temporary (deleted) path of a semaphore that is very much in use
    (another run's vLLM engine starting: removing it made its spawned child fail to open it)."""
    try:
        dev = os.stat(root).st_dev
    except OSError:
        return set()
    device = f"{os.major(dev):02x}:{os.minor(dev):02x}"
    inodes: dict[int, str] = {}
    for entry in root.iterdir():
        try:
            inodes[entry.stat().st_ino] = entry.name
        except OSError:
            continue  # removed meanwhile
    used: set[str] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for line in (proc / "maps").read_text().splitlines():
                fields = line.split(maxsplit=5)  # address perms offset dev inode [path]
                if len(fields) >= 5 and fields[3] == device and int(fields[4]) in inodes:
                    used.add(inodes[int(fields[4])])
            for fd in (proc / "fd").iterdir():
                st = os.stat(fd)
                if st.st_dev == dev and st.st_ino in inodes:
                    used.add(inodes[st.st_ino])
        except (FileNotFoundError, ProcessLookupError, PermissionError, NotADirectoryError, OSError, ValueError):
            continue  # the process ended while being read, or is not ours to read
    return used


def remove_orphans(since: set[str], root: Path = SHM) -> list[str]:
    """Remove the segments that appeared after ``since`` (a ``snapshot``) and that nothing uses; returns them."""
    candidates = snapshot(root) - since
    if not candidates:
        return []
    removed = []
    for name in sorted(candidates - in_use(root)):
        try:
            (root / name).unlink()
            removed.append(name)
        except FileNotFoundError:
            pass
    return removed


def descendants() -> list:
    """This process's live descendants (psutil processes)."""
    import psutil

    try:
        return psutil.Process().children(recursive=True)
    except psutil.Error:
        return []


def end_processes(procs: list, timeout_s: float = 15.0) -> list[int]:
    """Wait up to ``timeout_s`` for ``procs`` (and this process's descendants now) to exit, then kill the rest;
    returns the killed pids. Processes whose parent exited first (Ray's workers once the raylet is gone) are no
    longer descendants, so take ``procs`` before stopping anything."""
    import psutil

    procs = list({p.pid: p for p in [*procs, *descendants()]}.values())
    _, alive = psutil.wait_procs(procs, timeout=timeout_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)
    return [p.pid for p in alive]


def settle(since: set[str], procs: list, timeout_s: float = 15.0) -> tuple[list[int], list[str]]:
    """After a run: end its leftover processes, then remove its orphaned segments; returns (killed pids, removed)."""
    killed = end_processes(procs, timeout_s)
    time.sleep(0.2)  # the kernel drops a killed process's mappings as it reaps it
    return killed, remove_orphans(since)
