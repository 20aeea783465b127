"""Tiny local models, a built-in arithmetic task and a warm start: what CPU tests and smoke runs train on."""
