"""Node loss, as the driver's watcher sees it: a node Ray reports dead, or one whose raylet no longer accepts a
connection (refused at once when the process died, well before Ray's own health check gives up)."""

import socket

from verl_ext.platform import node_watch


def _node(port: int) -> dict:
    return {"NodeID": f"n{port}", "NodeManagerAddress": "127.0.0.1", "NodeManagerPort": port}


def test_a_listening_raylet_is_reachable_a_closed_port_is_not():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert node_watch._reachable(_node(port))
    assert not node_watch._reachable(_node(port))  # closed now: refused
    assert not node_watch._reachable({"NodeID": "x"})  # no address: not a node one can reach


def test_lost_nodes_are_the_dead_and_the_unreachable(monkeypatch):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        up = _node(server.getsockname()[1])
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            gone = _node(closed.getsockname()[1])  # bound, never listening: refused
        dead = _node(1)
        start = {n["NodeID"]: n for n in (up, gone, dead)}
        monkeypatch.setattr(node_watch, "_alive", lambda: {up["NodeID"]: up, gone["NodeID"]: gone})
        assert [n["NodeID"] for n in node_watch.lost_nodes(start)] == [gone["NodeID"], dead["NodeID"]]


def test_the_message_names_the_node_the_checkpoint_and_the_resume(tmp_path):
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("3")
    message = node_watch.lost_message({"NodeManagerAddress": "10.0.0.7", "NodeID": "abc"}, str(tmp_path))
    assert "10.0.0.7" in message and "abc" in message and "step 3" in message and "trainer.resume_mode=auto" in message
    assert "no checkpoint was written yet" in node_watch.lost_message({"NodeID": "abc"}, str(tmp_path / "none"))


BLOCKED = """
import signal, subprocess, sys, threading
from verl_ext.platform.node_watch import end_driver
if sys.argv[1] == "ignore":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a driver deaf to interrupts
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(child.pid, flush=True)
held = threading.Lock()
held.acquire()
try:
    threading.Thread(target=end_driver, args=(0.5,), daemon=True).start()
    held.acquire()  # blocked in a system call: the simulated interrupt alone does not wake it
except KeyboardInterrupt:
    child.kill()
    sys.exit(3)
"""


def _blocked_driver(mode: str) -> tuple[int, int]:
    import subprocess
    import sys

    import signal

    # SIGINT at its default in the driver, as in a terminal (a CI lane's background job starts with it ignored).
    run = subprocess.run([sys.executable, "-c", BLOCKED, mode], capture_output=True, text=True, timeout=120,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return run.returncode, int(run.stdout.split()[0])


def test_a_driver_blocked_in_a_wait_is_woken_by_a_real_sigint():
    code, _ = _blocked_driver("default")
    assert code == 3  # KeyboardInterrupt reached the main thread


def test_a_driver_deaf_to_interrupts_is_ended_with_its_processes():
    import psutil

    code, child = _blocked_driver("ignore")
    assert code == 1
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
