"""Elastic Attention's attention modes behind three public ops (``ops.py``): ``elastic_prefill`` (one launch, a mode
per sequence and query head), ``elastic_attention_pair`` (the differentiable FA/SA pair of router training) and
``elastic_decode`` (one token, per-head visible range).

One layout per op, as flash-linear-attention's ``fla/ops/<op>/``: the mode registry (``modes.py``), the oracles
(``naive.py``), the CPU back end (``cpu.py``), the Triton kernels (``triton_*.py``), shared helpers (``utils.py``,
``backward.py``) and XAttention's block-mask estimation (``xattention.py``); ``kernels/README.md`` maps them.
"""

from .ops import elastic_attention_pair, elastic_decode, elastic_prefill

__all__ = ["elastic_attention_pair", "elastic_decode", "elastic_prefill"]
