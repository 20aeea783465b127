"""Triton, when it is installed: it comes with torch's CUDA builds and is not a dependency of verl-ext, so the
public ops fall back to the PyTorch references without it (``ops.resolve_backend``). The ``triton_*.py`` kernel
modules import triton directly; only this module's users are imported without it."""

try:
    import triton
except ImportError:  # torch's CPU builds do not bring it
    triton = None

HAVE_TRITON = triton is not None
