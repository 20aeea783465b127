"""Elastic Attention's attention modes: PyTorch references (the CPU back end); Triton kernels are planned."""
