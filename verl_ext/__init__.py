"""verl-ext: Re², Elastic Attention and MemoryRewardBench as verl plugins, runnable end to end on CPU."""

__version__ = "0.1.0"

# Import verl before any verl_ext submodule does: `import verl` loads our plugin (verl_ext.plugin) through its
# entry point, and if that happened in the middle of importing a verl_ext submodule, the plugin would see that
# submodule half-initialised, fail, and verl would swallow the error. Without verl nothing of verl-ext works, but
# `python -m verl_ext.doctor` must still run to say so.
try:
    import verl  # noqa: F401
except ImportError:
    pass
