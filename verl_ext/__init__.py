"""verl-ext: Re², Elastic Attention and MemoryRewardBench as verl plugins, runnable end to end on CPU."""

# Import verl before any verl_ext submodule does: `import verl` loads our plugin (verl_ext.plugin) through its
# entry point, and if that happened in the middle of importing a verl_ext submodule, the plugin would see that
# submodule half-initialised, fail, and verl would swallow the error.
import verl  # noqa: F401, E402

__version__ = "0.1.0"
