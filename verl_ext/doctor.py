"""``python -m verl_ext.doctor``: is this environment one verl-ext runs in, and what will verl do here?

Prints, a line each: the versions of verl, torch (and CUDA), transformers, vllm and triton against verl 0.9.1's
pins (read from verl's own installed metadata), which platform verl will pick and why, what verl-ext registered,
the Elastic Attention kernel back end, and for every mismatch the command that fixes it. Exits 1 on a blocking
mismatch (something verl-ext cannot run with), 0 otherwise. Never a traceback: what cannot be determined is said.

``gather()`` reads the environment; ``diagnose(facts)`` is pure (tested with made-up environments).
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from importlib import metadata
from typing import Optional

VERL_VERSION = "0.9.1"
# verl 0.9.1's base requirement and its GPU extras' pin, used when verl's metadata cannot be read.
TRANSFORMERS_RANGE = ">=5.5.3,<5.11,!=5.6.0"
STACK = {"torch": "2.11.0", "transformers": "5.9.0", "vllm": "0.24.0"}
OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclasses.dataclass
class Finding:
    level: str  # ok / warn / FAIL (blocking)
    topic: str
    message: str
    fix: str = ""


def _version(dist: str) -> Optional[str]:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _verl_pins() -> dict[str, str]:
    """{package: pinned version} of verl's vllm extra, and the base transformers range, from verl's metadata."""
    pins = {"transformers_range": TRANSFORMERS_RANGE, **STACK}
    try:
        requires = metadata.requires("verl") or []
    except metadata.PackageNotFoundError:
        return pins
    for req in requires:
        match = re.match(r"^([A-Za-z0-9_.-]+)\s*==\s*([^;\s]+)\s*;\s*extra\s*==\s*\"vllm\"", req)
        if match and match.group(1) in STACK:
            pins[match.group(1)] = match.group(2)
        base = re.match(r"^transformers\s*([^;]+)$", req.strip())
        if base:
            pins["transformers_range"] = base.group(1).replace(" ", "")
    return pins


def _vllm_facts() -> dict:
    from verl_ext.platform.vllm_cpu import facts

    return facts()


def _torch_facts() -> dict:
    try:
        import torch
    except ImportError:
        return {"torch": None}
    required_triton = None
    try:
        required_triton = next((r for r in metadata.requires("torch") or [] if r.startswith("triton")), None)
    except metadata.PackageNotFoundError:
        pass
    return {"torch": torch.__version__, "torch_cuda": torch.version.cuda, "gpu": torch.cuda.is_available(),
            "torch_requires_triton": required_triton}


def _platform_facts(verl_present: bool) -> dict:
    env = os.environ.get("VERL_PLATFORM", "").strip().lower() or None
    if not verl_present:
        return {"env_platform": env, "platform": None}
    try:
        from verl.plugin.platform.platform_manager import _detect_platform_name

        return {"env_platform": env, "platform": _detect_platform_name()}
    except Exception as err:  # noqa: BLE001 - reported as a finding, never a traceback
        return {"env_platform": env, "platform": None, "platform_error": f"{type(err).__name__}: {err}"}


def _registered(verl_present: bool) -> dict:
    if not verl_present:
        return {}
    try:
        from verl_ext.plugin import registered_names

        names = registered_names()
    except Exception as err:  # noqa: BLE001
        return {"error": f"{type(err).__name__}: {err}"}
    try:
        from verl_ext.elastic_attention.vllm_plugin import ARCHITECTURES

        names["vllm_models"] = sorted(ARCHITECTURES.values())
    except Exception as err:  # noqa: BLE001
        names["vllm_models"] = [f"unavailable ({type(err).__name__})"]
    return names


def _kernel_backend(gpu: bool) -> str:
    try:
        import torch

        from verl_ext.kernels.elastic_attention.utils import resolve_backend

        return resolve_backend("auto", torch.device("cuda" if gpu else "cpu"))
    except Exception as err:  # noqa: BLE001
        return f"unavailable ({type(err).__name__}: {err})"


def gather() -> dict:
    """The facts ``diagnose`` reads, from this environment."""
    facts = {"python": sys.version.split()[0], "verl": _version("verl"), "verl_ext": _version("verl-ext"),
             "transformers": _version("transformers"), **_vllm_facts(),
             "triton": _version("triton"), "pins": _verl_pins(), "triton_interpret": os.environ.get("TRITON_INTERPRET")}
    facts.update(_torch_facts())
    verl_importable = False
    if facts["verl"]:
        try:
            import verl  # noqa: F401

            verl_importable = True
        except Exception as err:  # noqa: BLE001
            facts["verl_import_error"] = f"{type(err).__name__}: {err}"
    facts.update(_platform_facts(verl_importable))
    facts["registered"] = _registered(verl_importable)
    facts["kernel_backend"] = _kernel_backend(bool(facts.get("gpu")))
    return facts


def _in_range(version: str, spec: str) -> bool:
    from packaging.specifiers import SpecifierSet

    return SpecifierSet(spec).contains(version, prereleases=True)


def _base(version: str) -> str:
    return version.split("+")[0]


def diagnose(facts: dict) -> list[Finding]:
    out: list[Finding] = []
    pins = facts.get("pins") or {"transformers_range": TRANSFORMERS_RANGE, **STACK}
    stack_fix = 'pip install "verl-ext[vllm]"   (verl\'s own GPU stack: torch, vllm and transformers as verl pins them)'
    # verl
    if not facts.get("verl"):
        out.append(Finding(FAIL, "verl", "verl is not installed; verl-ext extends it.",
                           f'pip install "verl=={VERL_VERSION}"   (on a GPU node: {stack_fix})'))
    elif facts["verl"] != VERL_VERSION:
        out.append(Finding(FAIL, "verl", f"verl {facts['verl']} is installed; verl-ext is built for verl "
                                          f"{VERL_VERSION} (it patches seams that move between versions).",
                           f'pip install "verl=={VERL_VERSION}"'))
    elif facts.get("verl_import_error"):
        out.append(Finding(FAIL, "verl", f"verl {facts['verl']} is installed but does not import: "
                                          f"{facts['verl_import_error']}", 'pip install --force-reinstall "verl==0.9.1"'))
    else:
        out.append(Finding(OK, "verl", f"verl {facts['verl']}, verl-ext {facts.get('verl_ext') or 'not installed'}"))
    # torch
    torch_version = facts.get("torch")
    if not torch_version:
        out.append(Finding(FAIL, "torch", "torch is not installed.", f"{stack_fix}; CPU only: bash scripts/install.sh"))
    else:
        cuda = facts.get("torch_cuda")
        build = f"CUDA {cuda} build" if cuda else "CPU build"
        gpu = facts.get("gpu")
        if not _in_range(_base(torch_version), ">=2.11"):
            out.append(Finding(FAIL, "torch", f"torch {torch_version} ({build}) is older than 2.11, the oldest verl-ext "
                                              "supports.", stack_fix))
        elif cuda and not gpu:
            out.append(Finding(WARN, "torch", f"torch {torch_version} is a {build} but no GPU is visible: fine for the "
                                              "CPU path, which needs the CPU platform asked for (see platform).",
                               "export VERL_PLATFORM=cpu   (or use the CPU configs: verl_ext.platform: cpu)"))
        elif gpu and _base(torch_version) != pins["torch"]:
            out.append(Finding(WARN, "torch", f"torch {torch_version} on a GPU; verl {VERL_VERSION}'s GPU stacks pin "
                                              f"{pins['torch']}.", stack_fix))
        else:
            out.append(Finding(OK, "torch", f"torch {torch_version} ({build}; GPU {'visible' if gpu else 'none'})"))
    # transformers
    tf = facts.get("transformers")
    if not tf:
        out.append(Finding(FAIL, "transformers", "transformers is not installed.",
                           f'pip install "transformers=={pins["transformers"]}"'))
    elif not _in_range(tf, pins["transformers_range"]):
        out.append(Finding(FAIL, "transformers", f"transformers {tf} is outside verl {VERL_VERSION}'s range "
                                                 f"{pins['transformers_range']}.",
                           f'pip install "transformers=={pins["transformers"]}"'))
    else:
        note = "" if tf == pins["transformers"] else f" (verl's GPU stacks pin {pins['transformers']})"
        out.append(Finding(OK, "transformers", f"transformers {tf}{note}"))
    out.append(_vllm_finding(facts, pins, stack_fix))
    # triton
    triton, wanted = facts.get("triton"), facts.get("torch_requires_triton")
    wanted_version = re.search(r"==\s*([\d.]+)", wanted or "")
    if not triton:
        out.append(Finding(WARN if facts.get("gpu") else OK, "triton",
                           "triton not installed: the Elastic Attention kernels fall back to the PyTorch references",
                           'pip install triton   (torch\'s CUDA builds bring the right one)' if facts.get("gpu") else ""))
    elif wanted_version and triton != wanted_version.group(1):
        out.append(Finding(WARN, "triton", f"triton {triton}, but torch {torch_version} was built against "
                                           f"{wanted_version.group(1)}.", f'pip install "triton=={wanted_version.group(1)}"'))
    else:
        out.append(Finding(OK, "triton", f"triton {triton}"))
    out.append(_platform_finding(facts))
    # registrations and kernels
    registered = facts.get("registered") or {}
    if registered.get("error"):
        out.append(Finding(FAIL, "registered", f"verl-ext's plugin failed: {registered['error']}",
                           "pip install -e .   (reinstall verl-ext so verl finds its entry point)"))
    elif registered:
        shown = "; ".join(f"{k}: {', '.join(v) or '-'}" for k, v in registered.items())
        out.append(Finding(OK, "registered", shown))
    backend = facts.get("kernel_backend")
    why = {"triton": " (the Triton kernels" + (", through the interpreter: TRITON_INTERPRET=1)"
                                               if facts.get("triton_interpret") == "1" and not facts.get("gpu") else ")"),
           "reference": " (the PyTorch references: the kernels need CUDA and triton, or TRITON_INTERPRET=1)"}
    out.append(Finding(OK, "kernels", f"Elastic Attention back end: {backend}{why.get(backend, '')}"))
    return out


def _vllm_finding(facts: dict, pins: dict, stack_fix: str) -> Finding:
    """Which vLLM is installed, and whether verl's vLLM rollout can run here (on a GPU, or rehearsed on the CPU
    with vllm-cpu at verl's pin), with what to run when it cannot."""
    vllm, cpu, alias, pin = facts.get("vllm"), facts.get("vllm_cpu"), facts.get("vllm_alias"), pins["vllm"]
    rehearse = "bash scripts/install_vllm_cpu.sh   (vllm-cpu at verl's pin, in .venv-vllm)"
    if cpu and (vllm is None or alias):
        if cpu != pin:
            return Finding(WARN, "vllm", f"vllm-cpu {cpu} (the CPU build of vLLM) is not verl {VERL_VERSION}'s pin "
                                         f"{pin}: the elastic vLLM models run in it standalone, but verl's vLLM "
                                         f"rollout is rehearsed on vllm-cpu {pin} only.", rehearse)
        if not alias:
            return Finding(WARN, "vllm", f"vllm-cpu {cpu} is installed, but verl looks vLLM up as the distribution "
                                         "'vllm', so actor_rollout_ref.rollout.name=vllm will not start here.",
                           "python -m verl_ext.platform.vllm_cpu alias")
        return Finding(OK, "vllm", f"vllm-cpu {cpu} (verl's pin, seen by verl as vllm {vllm}): verl's own vLLM rollout "
                                   "runs here on the CPU platform (actor_rollout_ref.rollout.name=vllm with a CPU "
                                   "config or VERL_PLATFORM=cpu); the rehearsal engine of GPU runs")
    if vllm and vllm != pin:
        return Finding(WARN, "vllm", f"vllm {vllm}; verl {VERL_VERSION} pins {pin} (the elastic vLLM models are "
                                     f"checked against {pin}).", stack_fix)
    if vllm:
        where = "on this GPU" if facts.get("gpu") else "on a GPU (this is its GPU build; no GPU is visible here)"
        return Finding(OK, "vllm", f"vllm {vllm}: verl's vLLM rollout runs {where}")
    return Finding(OK, "vllm", "vllm not installed: the CPU path generates with actor_rollout_ref.rollout.name=hf; to "
                               f"rehearse verl's vLLM rollout on this CPU: {rehearse.split('   ')[0]}")


def _platform_finding(facts: dict) -> Finding:
    env, platform = facts.get("env_platform"), facts.get("platform")
    if facts.get("platform_error"):
        return Finding(FAIL, "platform", f"verl cannot pick a platform: {facts['platform_error']}",
                       "unset VERL_PLATFORM, or set it to one of verl's registered platforms (cpu: verl-ext's)")
    if platform is None:
        return Finding(WARN, "platform", "unknown (verl is not importable)")
    if env:
        return Finding(OK, "platform", f"{platform}: VERL_PLATFORM={env} asks for it")
    if facts.get("gpu"):
        return Finding(OK, "platform", f"{platform}: auto-detected (a GPU is visible)")
    return Finding(WARN, "platform", f"{platform}: no accelerator is visible, so verl falls back to '{platform}' (what a "
                                     "CPU-only Ray head node driving GPU workers needs). verl-ext's CPU platform is "
                                     "used only when asked.",
                   "for a CPU run: export VERL_PLATFORM=cpu, or use a CPU config (verl_ext.platform: cpu), as "
                   "python -m verl_ext.cpu_smoke does")


def render(findings: list[Finding]) -> str:
    width = max(len(f.topic) for f in findings)
    lines = []
    for f in findings:
        lines.append(f"[{f.level:>4}] {f.topic:<{width}}  {f.message}")
        if f.fix:
            lines.append(f"       {'':<{width}}  fix: {f.fix}")
    blocking = [f.topic for f in findings if f.level == FAIL]
    lines.append("blocking: " + ", ".join(blocking) if blocking else "no blocking mismatch")
    return "\n".join(lines)


def _quiet() -> None:
    """verl's import-time warnings and platform logs are not findings (the platform line says what they mean)."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    os.environ.setdefault("VERL_LOGGING_LEVEL", "ERROR")
    for name in list(logging.root.manager.loggerDict):
        if name == "verl" or name.startswith("verl."):
            logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: Optional[list[str]] = None) -> int:
    _quiet()
    findings = diagnose(gather())
    print(render(findings))
    return 1 if any(f.level == FAIL for f in findings) else 0


if __name__ == "__main__":
    sys.exit(main())
