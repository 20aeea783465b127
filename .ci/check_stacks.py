"""Does verl-ext resolve inside each of verl 0.9.1's GPU stacks without moving a pinned package?

    python .ci/check_stacks.py [--stack vllm|sglang|fsdp ...]

For each of verl's ``vllm``, ``sglang`` and ``fsdp`` extras: ``pip install --dry-run`` of ``verl-ext[<extra>]``
(which is ``verl[<extra>]==0.9.1`` plus verl-ext) with the extra's pins as constraints, and a check of pip's report
that every pinned package would be installed at exactly its pinned version. verl's own stack is resolved the same
way first: a stack verl itself cannot resolve is reported with pip's reason (verl 0.9.1's ``sglang`` extra: sglang
0.5.12 pins transformers==5.6.0, which verl excludes), and then verl-ext is checked against every pin of that stack
but the unresolvable package. flash-attn ships only as source that needs torch to build its metadata, so that stack
runs with the interpreter of an environment holding torch 2.11 (``--python``, default ``.venv-stack``) and without
build isolation. Exit 1 if verl-ext fails where verl resolves, or moves a pin.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE = {"torch": "2.11.0", "torchvision": "0.26.0", "torchaudio": "2.11.0"}
STACKS = {
    "vllm": {**BASE, "vllm": "0.24.0", "transformers": "5.9.0"},
    "sglang": {**BASE, "sglang": "0.5.12", "transformers": "5.9.0"},
    "fsdp": {**BASE, "flash-attn": "2.8.3"},
}


def dry_run(python: str, requirements: list[str], pins: dict[str, str], build_isolation: bool) -> tuple[bool, dict, str]:
    """(resolved, {name: version} pip would install, pip's error text)."""
    with tempfile.TemporaryDirectory() as tmp:
        constraints, report = Path(tmp) / "pins.txt", Path(tmp) / "report.json"
        constraints.write_text("".join(f"{k}=={v}\n" for k, v in pins.items()))
        cmd = [python, "-m", "pip", "install", "--dry-run", "--disable-pip-version-check",
               "--ignore-installed", "--report", str(report), "-c", str(constraints), *requirements]
        if not build_isolation:
            cmd.append("--no-build-isolation")
        env = dict(os.environ, FLASH_ATTENTION_SKIP_CUDA_BUILD="TRUE")
        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
        if res.returncode != 0:
            lines = [line for line in (res.stdout + res.stderr).splitlines() if line.strip() and "Location" not in line]
            return False, {}, "\n".join(lines[-24:])
        installed = {_name(item["metadata"]["name"]): item["metadata"]["version"]
                     for item in json.loads(report.read_text())["install"]}
        return True, installed, ""


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503: flash_attn == flash-attn


def moved(pins: dict[str, str], installed: dict[str, str]) -> dict[str, str]:
    return {k: installed.get(_name(k), "absent") for k, v in pins.items() if installed.get(_name(k)) != v}


def check(stack: str, python: str) -> bool:
    pins = STACKS[stack]
    isolation = stack != "fsdp"
    ok_verl, _, why = dry_run(python, [f"verl[{stack}]==0.9.1"], pins, isolation)
    if ok_verl:
        ok, installed, error = dry_run(python, ["-e", f".[{stack}]"], pins, isolation)
        if not ok:
            print(f"[FAIL] {stack}: verl[{stack}]==0.9.1 resolves but verl-ext[{stack}] does not:\n{error}")
            return False
        shifted = moved(pins, installed)
        if shifted:
            print(f"[FAIL] {stack}: verl-ext moves pinned packages: {shifted}")
            return False
        print(f"[  ok] {stack}: verl-ext resolves inside verl[{stack}]==0.9.1; pins kept: "
              + ", ".join(f"{k}=={v}" for k, v in pins.items()))
        return True
    # verl's own stack does not resolve: check verl-ext against the stack without the package verl cannot hold.
    culprit = next(k for k in pins if k not in BASE and k != "transformers")
    rest = {k: v for k, v in pins.items() if k != culprit}
    print(f"[note] {stack}: verl[{stack}]==0.9.1 itself does not resolve (an upstream conflict, not verl-ext's):")
    reason = [line for line in why.splitlines() if "depends on" in line or "requested" in line] or why.splitlines()
    print("       " + "\n       ".join(reason))
    ok, installed, error = dry_run(python, ["-e", ".", *rest], rest, isolation)
    shifted = moved(rest, installed) if ok else {}
    if not ok or shifted:
        print(f"[FAIL] {stack}: verl-ext does not resolve inside the rest of the stack ({rest}): {error or shifted}")
        return False
    print(f"[  ok] {stack}: verl-ext resolves with every other pin of the stack kept: "
          + ", ".join(f"{k}=={v}" for k, v in rest.items()))
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", action="append", choices=sorted(STACKS))
    parser.add_argument("--python", default=str(ROOT / ".venv-stack" / "bin" / "python"),
                        help="interpreter whose pip resolves (the fsdp stack needs torch 2.11 in it)")
    args = parser.parse_args()
    python = args.python if Path(args.python).exists() else sys.executable
    results = [check(stack, python) for stack in args.stack or sorted(STACKS)]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
