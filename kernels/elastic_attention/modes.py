"""Per-(sequence, query head) attention modes of the Triton kernels' mode table (int32 codes).

FULL is dense causal attention; STREAMING is sink + local window, token-exact; STREAMING_BLOCKS is the official
kernel's variant with the sink and the window rounded up to whole blocks; BLOCK_SPARSE attends the key blocks of a
per-head block mask (XAttention's selection). The router's decision z = 1 maps to FULL, z = 0 to the sparse mode.
"""

FULL = 0
STREAMING = 1
STREAMING_BLOCKS = 2
BLOCK_SPARSE = 3

NAMES = {FULL: "full", STREAMING: "streaming", STREAMING_BLOCKS: "streaming_blocks", BLOCK_SPARSE: "block_sparse"}
