"""Node loss ends a run with a message, not a hang (the CPU platform's driver; ``verl_ext.plugin`` starts it).

A rank on a lost node leaves its peers waiting in a collective until gloo's timeout (30 minutes) and verl's trainer
waiting on them; nothing says what happened. ``watch_nodes`` watches the nodes that were alive when Ray came up,
from the driver: a node is lost when Ray's node table says it died or its raylet stops accepting connections (a
direct probe: Ray's own health check takes about 15 s, five failed checks 3 s apart). On a loss it prints which
node was lost, the last checkpoint and how to resume, and interrupts the driver, which then stops Ray and its
processes (``vllm_guard.cleanup_at_exit``): the run ends within ``BOUND_S`` of the loss. A driver blocked in a wait
that never looks at the interrupt (seen: verl waiting on a lost object Ray keeps trying to rebuild) gets a real
SIGINT after ``GRACE_S``, and after another ``GRACE_S`` its processes are killed and it exits with status 1 (on an
existing cluster Ray then ends the job's actors). When verl's trainer fails first (an actor on the lost node
unreachable), the same check runs as the driver exits, so the message still comes.
"""

from __future__ import annotations

import _thread
import atexit
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Optional

logger = logging.getLogger(__name__)

POLL_S = 2.0
GRACE_S = 15.0  # from the interrupt to a real SIGINT, and from that to ending the driver
BOUND_S = 60  # documented bound from a node's loss to the end of the run (README "Running on a Ray cluster"):
              # a poll and a probe (< 4 s) plus two graces



def last_checkpoint(checkpoint_dir: Optional[str]) -> Optional[int]:
    """The step of the last complete checkpoint verl wrote under ``checkpoint_dir`` (None if none)."""
    if not checkpoint_dir:
        return None
    marker = Path(checkpoint_dir) / "latest_checkpointed_iteration.txt"
    try:
        return int(marker.read_text().strip())
    except (OSError, ValueError):
        return None


def lost_message(node: dict, checkpoint_dir: Optional[str]) -> str:
    step = last_checkpoint(checkpoint_dir)
    saved = (f"the last checkpoint is step {step} in {checkpoint_dir}" if step is not None
             else "no checkpoint was written yet (trainer.save_freq), so a rerun starts from the beginning")
    return (f"verl_ext: Ray node {node.get('NodeManagerAddress')} (node id {node.get('NodeID')}) was lost during the run; "
            f"{saved}. To resume, start a cluster with enough nodes and rerun the same command with "
            "trainer.resume_mode=auto (python -m verl_ext.cpu_smoke --resume RUN_DIR ...), pointed at it.")


PROBE_TIMEOUT_S = 1.0


def _alive() -> dict[str, dict]:
    import ray

    return {n["NodeID"]: n for n in ray.nodes() if n.get("Alive")}


def _reachable(node: dict) -> bool:
    """Whether the node's raylet accepts a connection (refused at once when its process died on a live machine;
    a timeout when the machine is gone)."""
    try:
        with socket.create_connection((node["NodeManagerAddress"], int(node["NodeManagerPort"])),
                                      timeout=PROBE_TIMEOUT_S):
            return True
    except (OSError, KeyError, ValueError):
        return False


def lost_nodes(start: dict[str, dict]) -> list[dict]:
    """The nodes of ``start`` (node id -> Ray's node record) that died or no longer answer."""
    alive = _alive()
    return [node for node_id, node in start.items() if node_id not in alive or not _reachable(node)]


def _report(node: dict, checkpoint_dir: Optional[str]) -> None:
    if getattr(watch_nodes, "lost", None):
        return
    message = lost_message(node, checkpoint_dir)
    logger.error(message)
    print(message, flush=True)
    watch_nodes.lost = message


def ray_initialized() -> bool:
    import ray

    return ray.is_initialized()


def end_driver(grace_s: float) -> None:
    """Stop this driver, each step only if the last did not: the interrupt Python checks between bytecodes, then a
    real SIGINT (it also wakes a blocking system call), then killing the driver's processes and exiting with 1.
    Runs in the watcher thread; the driver's exit ends it (a daemon thread) at whichever step worked."""
    _thread.interrupt_main()
    time.sleep(grace_s)
    # To the main thread itself: a process-directed signal may land on any thread and leave the main one waiting.
    signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
    time.sleep(grace_s)
    logger.error("verl_ext: the driver did not stop %.0f s after the node loss; ending it and its processes",
                 2 * grace_s)
    import psutil

    for child in psutil.Process().children(recursive=True):
        try:
            child.kill()
        except psutil.Error:
            pass
    logging.shutdown()
    os._exit(1)


def watch_nodes(checkpoint_dir: Optional[str], poll_s: float = POLL_S) -> threading.Thread:
    """Start the watcher thread (daemon) for this driver; returns it."""

    def at_exit(start):
        """verl's trainer may fail on an unreachable actor before a poll sees the loss: check once more while the
        driver exits (registered after ray.init's own exit handler, so it runs while Ray is still up)."""
        try:
            lost = lost_nodes(start) if ray_initialized() else []
        except Exception:  # noqa: BLE001 - Ray already disconnected: nothing more to say
            return
        if lost:
            _report(lost[0], checkpoint_dir)

    def run():
        while not ray_initialized():
            time.sleep(poll_s)
        try:
            start = _alive()
        except Exception:  # noqa: BLE001 - Ray shutting down before the first poll: nothing to watch
            return
        atexit.register(at_exit, start)
        while ray_initialized():
            time.sleep(poll_s)
            try:
                lost = lost_nodes(start)
            except Exception:  # noqa: BLE001 - the driver is disconnecting (end of the run)
                return
            if lost:
                _report(lost[0], checkpoint_dir)
                end_driver(GRACE_S)
                return

    thread = threading.Thread(target=run, name="verl_ext-node-watch", daemon=True)
    thread.start()
    return thread
