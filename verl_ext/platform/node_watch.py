"""Node loss ends a run with a message, not a hang (the CPU platform's driver; ``verl_ext.plugin`` starts it).

A rank on a lost node leaves its peers waiting in a collective until gloo's timeout (30 minutes) and verl's trainer
waiting on them; nothing says what happened. ``watch_nodes`` polls Ray's node table from the driver once Ray is up:
when a node that was alive at the start dies, it prints which node was lost, the last checkpoint and how to resume,
and interrupts the driver, which then stops Ray and its processes (``vllm_guard.cleanup_at_exit``). The run ends
within about ``BOUND_S`` of the loss: Ray's own failure detection (its GCS health check gives up on a raylet after
about 15 s: five failed checks 3 s apart), then one poll.
"""

from __future__ import annotations

import _thread
import logging
import threading
import time
from pathlib import Path
from typing import Optional

logger = logging.getLogger(__name__)

POLL_S = 2.0
BOUND_S = 60  # documented bound from a node's loss to the end of the run (README "Running on a Ray cluster")


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


def _alive() -> dict[str, dict]:
    import ray

    return {n["NodeID"]: n for n in ray.nodes() if n.get("Alive")}


def watch_nodes(checkpoint_dir: Optional[str], poll_s: float = POLL_S) -> threading.Thread:
    """Start the watcher thread (daemon) for this driver; returns it."""

    def run():
        import ray

        while not ray.is_initialized():
            time.sleep(poll_s)
        try:
            start = _alive()
        except Exception:  # noqa: BLE001 - Ray shutting down before the first poll: nothing to watch
            return
        while ray.is_initialized():
            time.sleep(poll_s)
            try:
                alive = _alive()
            except Exception:  # noqa: BLE001 - the driver is disconnecting (end of the run)
                return
            lost = [node for node_id, node in start.items() if node_id not in alive]
            if lost:
                message = lost_message(lost[0], checkpoint_dir)
                logger.error(message)
                print(message, flush=True)
                watch_nodes.lost = message
                _thread.interrupt_main()
                return

    thread = threading.Thread(target=run, name="verl_ext-node-watch", daemon=True)
    thread.start()
    return thread
