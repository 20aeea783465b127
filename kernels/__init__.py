"""verl-ext's kernels, one folder per op; imported as ``verl_ext.kernels``."""
