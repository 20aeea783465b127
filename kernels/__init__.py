"""kernels/ is importable as verl_ext.kernels (pyproject's package-dir mapping), never as a top-level ``kernels``.

verl-ext's kernels, one folder per op (``elastic_attention/``); ``kernels/README.md`` describes the layout.
"""
