"""A vLLM rollout engine that dies ends the run with the engine's error and the step, instead of a silent hang; and
a finished run leaves no vLLM process or shared-memory segment behind. Active on the CPU platform only (installed
by ``verl_ext.plugin`` when verl imports the modules below; with any other platform verl's code runs unpatched).

Why verl 0.9.1 hangs, and what each guard does:

- **A weight load that raises in the vLLM worker** (``BucketedWeightReceiver``): the receiver's ``finally`` closes
  its socket without acknowledging the bucket, and the sender in the actor worker waits on a plain ``recv()`` for
  ever. ``guard_receiver``: the first error is kept as text (so no frame holds a view into the shared-memory bucket),
  the remaining buckets are acknowledged without loading, and the error is raised once the transfer is complete; the
  sender finishes and verl's ``await`` of the worker's RPC raises it.
- **A worker or engine that is gone** (killed, crashed): nothing acknowledges. ``guard_sender``: the sender's socket
  waits in ``POLL_S`` slices and between them asks whether the vLLM side's RPC has ended; if it has, its error is
  raised. An engine that neither answers nor fails is bounded by ``ACK_TIMEOUT_S`` per bucket.
- **Either, named**: ``ServerAdapter.update_weights`` re-raises as ``RolloutEngineError`` with the training step.
- **An engine that dies while generating**: verl's agent loop turns every failed request into a failed group and the
  replay buffer refills it for ever. ``verl_ext.replay_buffer.FastPollReplayBuffer`` (the CPU configs' sampler)
  calls ``engine_error`` when groups fail, and raises with the step.
- **Leftovers**: ``cleanup_at_exit`` (driver) shuts every vLLM engine down before Ray stops, then removes the
  run's leftover processes and the shared-memory segments it created that no live process maps any more
  (``verl_ext.platform.shm``).
"""

from __future__ import annotations

import atexit
import logging
import os
import time
import traceback
from typing import Optional

logger = logging.getLogger(__name__)

POLL_S = 1.0
ACK_TIMEOUT_S = float(os.environ.get("VERL_EXT_WEIGHT_SYNC_ACK_TIMEOUT_S", "600"))
SERVER_PREFIX = "vllm_server_"
_PENDING: dict[str, object] = {}  # zmq handle -> the vLLM side's RPC of the weight sync under way


class RolloutEngineError(RuntimeError):
    """The rollout engine failed; the message names the step and carries the engine's own error."""


# -- vLLM worker side -----------------------------------------------------------------------------------------------

def guard_receiver(receiver_cls) -> None:
    from verl_ext._verl_compat import patch

    def make(receive_weights):
        def guarded_receive_weights(self, on_bucket_received):
            failure: list[str] = []

            def load(weights, is_last):
                if failure:
                    return  # acknowledged, not loaded: the sender must reach its end and clean up
                try:
                    on_bucket_received(weights, is_last)
                except Exception:  # noqa: BLE001 - kept as text, raised below once the transfer is complete
                    failure.append(traceback.format_exc())

            receive_weights(self, load)
            if failure:
                raise RuntimeError("loading the synced weights into vLLM failed:\n" + failure[0])

        return guarded_receive_weights

    patch(receiver_cls, "receive_weights", make)


# -- actor worker side ----------------------------------------------------------------------------------------------

class _WatchedSocket:
    """The weight sender's socket: ``recv`` waits in slices and checks the vLLM side's RPC between them."""

    def __init__(self, socket, handle: str):
        self._socket, self._handle = socket, handle

    def recv(self, *args, **kwargs):
        import zmq

        deadline = time.monotonic() + ACK_TIMEOUT_S
        while not self._socket.poll(int(POLL_S * 1000), zmq.POLLIN):
            _raise_if_receiver_ended(self._handle)
            if time.monotonic() > deadline:
                raise RolloutEngineError(f"the vLLM worker acknowledged no weight bucket for {ACK_TIMEOUT_S:.0f} s "
                                         "(VERL_EXT_WEIGHT_SYNC_ACK_TIMEOUT_S) and did not fail either.")
        return self._socket.recv(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._socket, name)


def _raise_if_receiver_ended(handle: str) -> None:
    import ray

    future = _PENDING.get(handle)
    if future is None:
        return
    ready, _ = ray.wait([future], timeout=0)
    if not ready:
        return
    ray.get(future)  # raises the worker's error
    raise RolloutEngineError("the vLLM worker ended the weight sync without acknowledging every bucket.")


def guard_sender(sender_cls, adapter_cls) -> None:
    from verl_ext._verl_compat import patch

    def make_socket(init_socket):
        def _init_socket(self):
            init_socket(self)
            self.socket = _WatchedSocket(self.socket, self.zmq_handle)

        return _init_socket

    def make_execute(execute):
        async def _execute_method(self, method, non_block=False, *args, **kwargs):
            result = await execute(self, method, non_block, *args, **kwargs)
            if non_block and method == "update_weights_from_ipc" and result is not None:
                _PENDING[self.zmq_handle] = result
            return result

        return _execute_method

    def make_update(update_weights):
        async def guarded_update_weights(self, weights, global_steps=None, *args, **kwargs):
            try:
                return await update_weights(self, weights, global_steps, *args, **kwargs)
            except Exception as err:
                step = "before the first step" if not global_steps else f"at training step {global_steps}"
                raise RolloutEngineError(f"verl's vLLM rollout: the weight sync {step} failed: "
                                         f"{type(err).__name__}: {err}") from err
            finally:
                _PENDING.pop(self.zmq_handle, None)

        return guarded_update_weights

    patch(sender_cls, "_init_socket", make_socket)
    patch(adapter_cls, "_execute_method", make_execute)
    patch(adapter_cls, "update_weights", make_update)


# -- driver / trainer side ------------------------------------------------------------------------------------------

def _engine_state(server) -> tuple[bool, str]:
    engine = getattr(server, "engine", None)
    if engine is None or not getattr(engine, "errored", False):
        return False, ""
    return True, repr(getattr(engine, "dead_error", "engine errored"))


_KNOWN_SERVERS: dict[str, object] = {}  # every server seen in this process: a dead actor is no longer listed


def _servers() -> list[tuple[str, object]]:
    import ray

    for name in ray.util.list_named_actors():
        name = name["name"] if isinstance(name, dict) else name
        if name.startswith(SERVER_PREFIX) and name not in _KNOWN_SERVERS:
            try:
                _KNOWN_SERVERS[name] = ray.get_actor(name)
            except ValueError:  # gone between listing and lookup
                continue
    return sorted(_KNOWN_SERVERS.items())


def remember_servers() -> list[str]:
    """Record this job's vLLM servers now, so one that dies later is still checked (and named)."""
    return [name for name, _ in _servers()]


def engine_error(timeout_s: float = 30.0) -> Optional[str]:
    """Why a vLLM rollout server of this Ray job cannot generate (its engine died, or the server actor itself), or
    None when every server answers and its engine is alive (or there is no vLLM server). Servers are remembered
    from earlier calls, so one that died since (no longer listed by Ray) is reported too."""
    import ray

    for name, server in _servers():
        try:
            errored, why = ray.get(server.__ray_call__.remote(_engine_state), timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            return f"the vLLM server {name} did not answer a health check within {timeout_s:.0f} s"
        except ray.exceptions.RayActorError as err:
            return f"the vLLM server actor {name} died: {err}"
        if errored:
            return f"the vLLM engine of {name} is dead: {why}"
    return None


def shutdown_engines(timeout_s: float = 60.0) -> list[str]:
    """Ask every vLLM server's engine to shut down (its processes and shared memory with it); returns the names."""
    import ray

    done = []
    for name, server in _servers():
        try:
            ray.get(server.__ray_call__.remote(lambda s: s.engine.shutdown() if getattr(s, "engine", None) else None),
                    timeout=timeout_s)
            done.append(name)
        except Exception as err:  # noqa: BLE001 - a dead engine has nothing left to shut down; said, not raised
            logger.warning("verl_ext: vLLM server %s did not shut down cleanly: %s", name, err)
    return done


def cleanup_at_exit() -> None:
    """Driver: at interpreter exit, before Ray's own shutdown, stop the vLLM engines, stop Ray, then remove the
    shared-memory segments this run created that nothing maps any more. Registered once per process."""
    if getattr(cleanup_at_exit, "registered", False):
        return
    from verl_ext.platform import shm

    before = shm.snapshot()

    def cleanup():
        import ray

        procs = shm.descendants()  # before Ray stops: its workers stop being our descendants when the raylet goes
        if ray.is_initialized():
            shutdown_engines()
            ray.shutdown()
        killed, removed = shm.settle(before, procs)
        if killed or removed:
            logger.warning("verl_ext: after the run, ended %d leftover process(es) and removed %d shared-memory "
                           "segment(s): %s", len(killed), len(removed), removed)

    atexit.register(cleanup)
    cleanup_at_exit.registered = True
