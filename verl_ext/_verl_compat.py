"""The one module that reaches into verl 0.9.1 internals that no extension point exposes.

Each patch is narrow, idempotent, checks that the verl object it touches still has the expected shape (so a verl
upgrade fails loudly here instead of misbehaving later), and is listed with its reason in ``third_party/verl.md``.
``tests/test_verl_compat_on_cpu.py`` fails if any target moves.

1. ``verl.utils.distributed.initialize_global_process_group_ray`` builds the backend string
   ``"cpu:gloo,{device}:{backend}"``, which is ``"cpu:gloo,cpu:gloo"`` on a CPU platform and rejected by
   torch.distributed ("Duplicate device type cpu"). Wrapped to pass ``backend="gloo"`` there.
   Must be installed before ``verl.workers.engine_workers`` / ``verl.checkpoint_engine.base`` import the name,
   which holds because verl loads plugins at the end of ``import verl``.
2. ``verl.workers.rollout.base._ROLLOUT_REGISTRY`` maps ``(name, mode)`` to the in-worker rollout adapter and has
   no register function; the ``hf`` adapter is added to the dict.
3. ``verl.utils.device.auto_set_device`` is the only hook verl's ``main_ppo`` calls with the whole config before
   ``ray.init``; wrapped to run the ``driver_config`` callbacks after it (config checks, CPU preparation).
4. ``FSDPEngine._build_module`` and ``FSDPEngineWithLMHead.forward_step`` (verl's engine-based actor / reference
   model) have no model-construction or pre-forward hook; wrapped to run the ``module_built(module)`` and
   ``before_forward(module, micro_batch)`` callbacks (a method adapting the model to its config, e.g. Elastic
   Attention's routers and prompt lengths). With no callback that acts, models are untouched.

This module knows no method: what runs at each seam is registered with ``add_callback`` (by ``verl_ext.plugin``).
"""

from __future__ import annotations

import functools
import inspect

HF_ROLLOUT_NAME = "hf"
HF_ADAPTER_FQN = "verl_ext.rollout.hf_adapter.HFServerAdapter"

_PATCHED_ATTR = "__verl_ext_patched__"

SEAMS = ("driver_config", "module_built", "before_forward")
_CALLBACKS: dict[str, list] = {seam: [] for seam in SEAMS}


def add_callback(seam: str, fn) -> None:
    """Run ``fn`` at ``seam`` (one of SEAMS), after those added before it; adding the same function twice is a
    no-op. driver_config: fn(config) before Ray starts; module_built: fn(module) after verl builds an actor /
    reference model; before_forward: fn(module, micro_batch) before each engine forward."""
    if seam not in _CALLBACKS:
        raise ValueError(f"unknown seam {seam!r}; known: {SEAMS}.")
    if fn not in _CALLBACKS[seam]:
        _CALLBACKS[seam].append(fn)


def run_callbacks(seam: str, *args) -> None:
    for fn in list(_CALLBACKS[seam]):
        fn(*args)


class VerlLayoutChanged(RuntimeError):
    """verl no longer has the object a compatibility patch targets; the pinned version is required."""


def _require(condition: bool, what: str) -> None:
    if not condition:
        raise VerlLayoutChanged(
            f"verl_ext compatibility patch target changed: {what}. verl_ext supports verl==0.9.1; "
            "see third_party/verl.md for what each patch needs."
        )


def patch_process_group_backend() -> None:
    import verl.utils.distributed as dist_utils

    original = getattr(dist_utils, "initialize_global_process_group_ray", None)
    _require(original is not None, "verl.utils.distributed.initialize_global_process_group_ray is missing")
    if getattr(original, _PATCHED_ATTR, False):
        return
    params = inspect.signature(original).parameters
    _require("backend" in params, "initialize_global_process_group_ray lost its `backend` argument")

    @functools.wraps(original)
    def initialize_global_process_group_ray(timeout_second=None, backend=None):
        from verl.utils.device import get_device_name

        if backend is None and get_device_name() == "cpu":
            backend = "gloo"
        return original(timeout_second=timeout_second, backend=backend)

    setattr(initialize_global_process_group_ray, _PATCHED_ATTR, True)
    dist_utils.initialize_global_process_group_ray = initialize_global_process_group_ray


def register_rollout_adapter(name: str = HF_ROLLOUT_NAME, fqn: str = HF_ADAPTER_FQN) -> None:
    import verl.workers.rollout.base as rollout_base

    registry = getattr(rollout_base, "_ROLLOUT_REGISTRY", None)
    _require(isinstance(registry, dict), "verl.workers.rollout.base._ROLLOUT_REGISTRY is no longer a dict")
    _require(("vllm", "async") in registry, "_ROLLOUT_REGISTRY is no longer keyed by (name, mode)")
    registry[(name, "async")] = fqn


def patch_config_check() -> None:
    import verl.utils.device as device_utils

    original = getattr(device_utils, "auto_set_device", None)
    _require(original is not None, "verl.utils.device.auto_set_device is missing")
    if getattr(original, _PATCHED_ATTR, False):
        return

    @functools.wraps(original)
    def auto_set_device(config) -> None:
        original(config)
        if config is not None and "actor_rollout_ref" in config and "trainer" in config:
            run_callbacks("driver_config", config)

    setattr(auto_set_device, _PATCHED_ATTR, True)
    device_utils.auto_set_device = auto_set_device


def register_cpu_training_engines() -> None:
    """verl's FSDP engines are plain torch.distributed code that runs over gloo; they register only for cuda/npu."""
    from verl.workers.engine.base import EngineRegistry
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead, FSDPEngineWithValueHead

    for model_type, engine_cls in (("language_model", FSDPEngineWithLMHead), ("value_model", FSDPEngineWithValueHead)):
        for backend in ("fsdp", "fsdp2"):
            if "cpu" not in EngineRegistry._engines.get(model_type, {}).get(backend, {}):
                EngineRegistry.register(model_type=model_type, backend=backend, device="cpu")(engine_cls)


def patch_engine_hooks() -> None:
    from verl.workers.engine.fsdp import transformer_impl

    base, lm = getattr(transformer_impl, "FSDPEngine", None), getattr(transformer_impl, "FSDPEngineWithLMHead", None)
    _require(base is not None and lm is not None, "verl's FSDPEngine / FSDPEngineWithLMHead moved")
    build, forward = base.__dict__.get("_build_module"), lm.__dict__.get("forward_step")
    _require(build is not None, "FSDPEngine._build_module is no longer defined on FSDPEngine")
    _require(forward is not None and list(inspect.signature(forward).parameters)[1:] ==
             ["micro_batch", "loss_function", "forward_only"],
             "FSDPEngineWithLMHead.forward_step(micro_batch, loss_function, forward_only) changed")
    if getattr(build, _PATCHED_ATTR, False):
        return

    @functools.wraps(build)
    def _build_module(self):
        module = build(self)
        run_callbacks("module_built", module)
        return module

    @functools.wraps(forward)
    def forward_step(self, micro_batch, loss_function, forward_only):
        run_callbacks("before_forward", self.module, micro_batch)
        return forward(self, micro_batch, loss_function, forward_only)

    for fn in (_build_module, forward_step):
        setattr(fn, _PATCHED_ATTR, True)
    base._build_module = _build_module
    lm.forward_step = forward_step


def install() -> None:
    patch_process_group_backend()
    register_rollout_adapter()
    patch_config_check()
    patch_engine_hooks()
