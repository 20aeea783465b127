"""One test per row of ``verl_ext.seams``: every private verl seam holds in the installed verl (0.9.1), every vLLM
seam of the elastic vLLM models holds in vLLM 0.24.0 (verl's pin) read from its wheel, and in the vLLM installed
where there is one; the checker itself fails on moved seams, and a different installed version is checked at first
use."""

import os
from pathlib import Path

import pytest

from verl_ext import seams
from verl_ext.seams import CHECKED, SEAMS, Seam, SeamChanged, check_at_first_use, installed_source, problem

VLLM_WHEEL = os.environ.get("VERL_EXT_VLLM_WHEEL")  # set by .ci/run: `pip download --no-deps vllm==0.24.0`


@pytest.mark.parametrize("seam", [s for s in SEAMS if s.package == "verl"], ids=lambda s: s.id)
def test_verl_seam_holds(seam):
    assert problem(seam, installed_source) is None


@pytest.mark.skipif(not VLLM_WHEEL, reason="set VERL_EXT_VLLM_WHEEL to a vllm-0.24.0 wheel (.ci/run downloads it)")
@pytest.mark.parametrize("seam", [s for s in SEAMS if s.package == "vllm"], ids=lambda s: s.id)
def test_vllm_024_seam_holds(seam):
    assert Path(VLLM_WHEEL).name.startswith(f"vllm-{CHECKED['vllm']}-")
    assert problem(seam, seams.wheel_source(VLLM_WHEEL)) is None


@pytest.mark.skipif(installed_source("vllm.forward_context") is None, reason="no vLLM installed here")
@pytest.mark.parametrize("seam", [s for s in SEAMS if s.package == "vllm"], ids=lambda s: s.id)
def test_installed_vllm_seam_holds(seam):
    assert problem(seam, installed_source) is None


FAKE = '''
class Engine:
    flag = 1

    def __init__(self):
        self.attn = None

    def build(self, config, device):
        if config.model_type == "language_model":
            return 1

def hook(a, b=None):
    pass
'''


@pytest.mark.parametrize("path,expect,found", [
    ("Engine.build", ("self", "config"), None),
    ("Engine.build", ("self", "model"), "takes ['self', 'config', 'device']"),
    ("Engine.build", ('model_type == "language_model"',), None),
    ("Engine.build", ('trainer_mode == "sync"',), "no longer contains"),
    ("Engine.attn", (), None),
    ("Engine.flag", (), None),
    ("Engine.cache", (), "Engine.cache is missing"),
    ("Other.build", (), "class Other is missing"),
    ("hook", ("a", "b"), None),
    ("gone", (), "gone is missing"),
])
def test_the_checker_fails_on_moved_seams(path, expect, found):
    result = problem(Seam("verl", "fake", path, "read", expect), lambda module: FAKE if module == "fake" else None)
    assert (result is None) if found is None else (found in result), result
    assert "module nothere is missing" in problem(Seam("verl", "nothere", "x", "read"), lambda m: None)


def test_another_installed_version_is_checked_at_first_use(monkeypatch):
    from importlib import metadata

    monkeypatch.setattr(metadata, "version", lambda dist: "0.9.2" if dist == "verl" else "0")
    check_at_first_use.cache_clear()
    try:
        monkeypatch.setattr(seams, "problems", lambda package: {})
        check_at_first_use("verl")  # every seam holds: a newer verl is accepted
        check_at_first_use.cache_clear()
        monkeypatch.setattr(seams, "problems", lambda package: {"m:X.y": "X.y is missing from m"})
        with pytest.raises(SeamChanged, match=r"verl 0.9.2 is installed; .* checked against verl 0.9.1 .* m:X.y: "
                                              r"X.y is missing from m. Install verl==0.9.1"):
            check_at_first_use("verl")
    finally:
        check_at_first_use.cache_clear()
