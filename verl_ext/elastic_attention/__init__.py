"""Elastic Attention: per-layer routers that send each KV head to full or sparse attention per input."""
