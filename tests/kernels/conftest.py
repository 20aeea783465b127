"""Kernel tests draw their inputs from fixed seeds (``gen_seed``): the same inputs on every run and machine.

A seed sweep is an extra, opt-in: ``VERL_EXT_KERNEL_SEEDS=0,1,2`` (or ``sweep:20`` for seeds 0..19) runs every
test that takes ``gen_seed`` once per seed, the seed in the test id, so a failing seed is named.
"""

import os


def _seeds() -> list[int]:
    spec = os.environ.get("VERL_EXT_KERNEL_SEEDS", "0").strip()
    if spec.startswith("sweep:"):
        return list(range(int(spec.split(":", 1)[1])))
    return [int(s) for s in spec.split(",") if s.strip()]


def pytest_generate_tests(metafunc):
    if "gen_seed" in metafunc.fixturenames:
        metafunc.parametrize("gen_seed", _seeds(), ids=lambda s: f"seed{s}")
