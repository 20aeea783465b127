"""The one module that patches verl 0.9.1 internals no extension point exposes, and the callbacks run there.

Every private seam verl-ext touches is a row of ``verl_ext.seams`` (tested against verl 0.9.1; checked on the
installed sources at first use when another version is installed). The patches, each applied by ``verl_ext.plugin``
when verl imports the patched module, idempotent:

1. ``verl.utils.distributed.initialize_global_process_group_ray`` builds the backend string
   ``"cpu:gloo,{device}:{backend}"``, which is ``"cpu:gloo,cpu:gloo"`` on a CPU platform and rejected by
   torch.distributed ("Duplicate device type cpu"). Wrapped to pass ``backend="gloo"`` there.
2. ``verl.workers.rollout.base._ROLLOUT_REGISTRY`` maps ``(name, mode)`` to the in-worker rollout adapter and has
   no register function; the ``hf`` adapter is added to the dict.
3. ``verl.utils.device.auto_set_device`` is the only hook verl's ``main_ppo`` calls with the whole config before
   ``ray.init``; wrapped to run the ``driver_config_pre`` callbacks before it (a config asking for the CPU platform)
   and the ``driver_config`` callbacks after it (config checks, CPU preparation).
4. ``FSDPEngine._build_module`` and ``FSDPEngineWithLMHead.forward_step`` (verl's engine-based actor / reference
   model) have no model-construction or pre-forward hook; wrapped to run the ``module_built(module)`` and
   ``before_forward(module, micro_batch)`` callbacks (a method adapting the model to its config, e.g. Elastic
   Attention's routers and prompt lengths). With no callback that acts, models are untouched.

5. ``verl.workers.engine.fsdp.transformer_impl`` builds FSDP2's forward-only models (the KL reference) with
   ``CPUOffloadPolicy(pin_memory=True)``, and pinning host memory needs an accelerator. On the CPU platform the name
   is rebound to a policy that offloads without pinning (the parameters live in host memory already).

This module knows no method: what runs at each seam is registered with ``add_callback`` (by ``verl_ext.plugin``).
"""

from __future__ import annotations

import functools

from verl_ext.seams import check_at_first_use

HF_ROLLOUT_NAME = "hf"
HF_ADAPTER_FQN = "verl_ext.rollout.hf_adapter.HFServerAdapter"

_PATCHED_ATTR = "__verl_ext_patched__"

SEAMS = ("driver_config_pre", "driver_config", "module_built", "before_forward")
_CALLBACKS: dict[str, list] = {seam: [] for seam in SEAMS}


def add_callback(seam: str, fn) -> None:
    """Run ``fn`` at ``seam`` (one of SEAMS), after those added before it; adding the same function twice is a
    no-op. driver_config_pre: fn(config) before verl resolves the platform; driver_config: fn(config) after it,
    before Ray starts; module_built: fn(module) after verl builds an actor / reference model; before_forward:
    fn(module, micro_batch) before each engine forward."""
    if seam not in _CALLBACKS:
        raise ValueError(f"unknown seam {seam!r}; known: {SEAMS}.")
    if fn not in _CALLBACKS[seam]:
        _CALLBACKS[seam].append(fn)


def run_callbacks(seam: str, *args) -> None:
    for fn in list(_CALLBACKS[seam]):
        fn(*args)


def patch(owner, name: str, make) -> None:
    """Replace ``owner.name`` by ``make(original)``, once."""
    original = getattr(owner, name)
    if getattr(original, _PATCHED_ATTR, False):
        return
    patched = functools.wraps(original)(make(original))
    setattr(patched, _PATCHED_ATTR, True)
    setattr(owner, name, patched)


def patch_process_group_backend() -> None:
    check_at_first_use("verl")
    import verl.utils.distributed as dist_utils

    def make(original):
        def initialize_global_process_group_ray(timeout_second=None, backend=None):
            from verl.utils.device import get_device_name

            if backend is None and get_device_name() == "cpu":
                backend = "gloo"
            return original(timeout_second=timeout_second, backend=backend)

        return initialize_global_process_group_ray

    patch(dist_utils, "initialize_global_process_group_ray", make)


def register_rollout_adapter(name: str = HF_ROLLOUT_NAME, fqn: str = HF_ADAPTER_FQN) -> None:
    check_at_first_use("verl")
    import verl.workers.rollout.base as rollout_base

    rollout_base._ROLLOUT_REGISTRY[(name, "async")] = fqn


def patch_config_check() -> None:
    check_at_first_use("verl")
    import verl.utils.device as device_utils

    def make(original):
        def auto_set_device(config) -> None:
            trainer_config = config is not None and "actor_rollout_ref" in config and "trainer" in config
            if trainer_config:
                run_callbacks("driver_config_pre", config)
            original(config)
            if trainer_config:
                run_callbacks("driver_config", config)

        return auto_set_device

    patch(device_utils, "auto_set_device", make)


def register_cpu_training_engines() -> None:
    """verl's FSDP engines are plain torch.distributed code that runs over gloo; they register only for cuda/npu."""
    from verl.workers.engine.base import EngineRegistry
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead, FSDPEngineWithValueHead

    for model_type, engine_cls in (("language_model", FSDPEngineWithLMHead), ("value_model", FSDPEngineWithValueHead)):
        for backend in ("fsdp", "fsdp2"):
            if "cpu" not in EngineRegistry._engines.get(model_type, {}).get(backend, {}):
                EngineRegistry.register(model_type=model_type, backend=backend, device="cpu")(engine_cls)


def patch_engine_hooks() -> None:
    check_at_first_use("verl")
    from verl.workers.engine.fsdp import transformer_impl

    def make_build(build):
        def _build_module(self):
            module = build(self)
            run_callbacks("module_built", module)
            return module

        return _build_module

    def make_forward(forward):
        def forward_step(self, micro_batch, loss_function, forward_only):
            run_callbacks("before_forward", self.module, micro_batch)
            return forward(self, micro_batch, loss_function, forward_only)

        return forward_step

    # Patch the methods where they are defined (subclasses of FSDPEngine inherit the wrapped build).
    patch(transformer_impl.FSDPEngine, "_build_module", make_build)
    patch(transformer_impl.FSDPEngineWithLMHead, "forward_step", make_forward)


def unpin_cpu_offload() -> None:
    """On the CPU platform, FSDP2's CPU offload policy in verl's FSDP engine never pins memory (see the module doc)."""
    check_at_first_use("verl")
    from verl.utils.device import get_device_name
    from verl.workers.engine.fsdp import transformer_impl

    policy = transformer_impl.CPUOffloadPolicy
    if get_device_name() != "cpu" or getattr(policy, _PATCHED_ATTR, False):
        return

    def unpinned(*args, **kwargs):
        kwargs["pin_memory"] = False
        return policy(*args, **kwargs)

    setattr(unpinned, _PATCHED_ATTR, True)
    transformer_impl.CPUOffloadPolicy = unpinned
