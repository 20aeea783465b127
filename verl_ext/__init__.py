"""verl-ext: Re², Elastic Attention and MemoryRewardBench as verl plugins, runnable end to end on CPU."""

__version__ = "0.1.0"
