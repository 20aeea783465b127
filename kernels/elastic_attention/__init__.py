"""Elastic Attention's attention modes: PyTorch references (``reference.py``, ``xattention.py``,
``mode_table_reference.py``) and Triton kernels behind three public ops: ``ops.elastic_prefill`` (one launch, a
mode per sequence and query head), ``pair.elastic_attention_pair`` (differentiable FA/SA pair for router training)
and ``decode.elastic_decode`` (one token, per-head visible range)."""
