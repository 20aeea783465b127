"""Run verl 0.9.1's own CPU tests twice, with plugins off (plain verl) and on (verl-ext loaded), and list every test
whose result differs: installing verl-ext must change nothing verl decides for users who do not use it.

    .venv/bin/python .ci/compare_verl_tests.py [--work DIR]

The tests come from verl's source distribution (``pip download --no-binary :all: --no-deps verl==0.9.1``): its
``tests/plugin/test_platform_abstraction.py`` (verl's platform choice) and its ``*_on_cpu.py`` files. Its ``verl/``
source folder is removed so the tests import the installed verl, the one the plugin entry point loads into.
VERL_PLATFORM and TRITON_INTERPRET are unset for both runs. The two runs go side by side, so both see the same load
(CI runs them beside its other lanes); a test whose outcome differs is run again, its file in both modes side by side,
and counts only if it differs again (a real difference from the plugin does not depend on load). Exit 1 if any
test's outcome differs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

VERSION = "0.9.1"


def fetch(work: Path) -> Path:
    root = work / f"verl-{VERSION}"
    if (root / "tests").is_dir():
        return root
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", "-q",
                    f"verl=={VERSION}", "-d", str(work)], check=True)
    with tarfile.open(work / f"verl-{VERSION}.tar.gz") as tar:
        tar.extractall(work, filter="data")
    shutil.rmtree(root / "verl")  # the installed verl is the one under test
    return root


def start(root: Path, plugins: str, files: list[str], tag: str = "") -> subprocess.Popen:
    """One pytest run of ``files`` with VERL_USE_EXTERNAL_PLUGINS=``plugins`` (the two runs go side by side: most of
    their time is Ray start-up and waiting)."""
    env = {k: v for k, v in os.environ.items() if k not in ("VERL_PLATFORM", "TRITON_INTERPRET")}
    env["VERL_USE_EXTERNAL_PLUGINS"] = plugins
    report = root / f"junit-{plugins}{tag}.xml"
    return subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
                             *files], cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def outcomes(root: Path, plugins: str, tag: str = "") -> dict[str, str]:
    report = root / f"junit-{plugins}{tag}.xml"
    result = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        result[name] = kinds[0] if kinds else "passed"
    return result


def module(path: str) -> str:
    """A test file's dotted module name, as it appears in its tests' junit class names."""
    return path[: -len(".py")].replace("/", ".")


def compare(root: Path, files: list[str], tag: str = "") -> tuple[dict[str, str], dict[str, str]]:
    """Outcomes of ``files`` with plugins off and on, the two runs side by side."""
    runs = [start(root, plugins, files, tag) for plugins in ("none", "auto")]
    for run in runs:
        run.wait()
    return outcomes(root, "none", tag), outcomes(root, "auto", tag)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "verl-own-tests"))
    args = parser.parse_args()
    root = fetch(Path(args.work).resolve())  # pytest runs with cwd=root: its report path must be absolute
    files = ["tests/plugin/test_platform_abstraction.py"] + sorted(
        str(p.relative_to(root)) for p in (root / "tests").rglob("*_on_cpu.py"))
    plain, with_ext = compare(root, files)
    differ = sorted(name for name in plain.keys() | with_ext.keys() if plain.get(name) != with_ext.get(name))
    counts = {kind: sum(v == kind for v in plain.values()) for kind in ("passed", "failure", "error", "skipped")}
    print(f"verl {VERSION}'s own tests: {len(files)} files, {len(plain)} tests; plain verl: {counts}")
    again = {name: [f for f in files if module(f) in name] for name in differ}
    if any(again.values()):  # again, the files holding them, both modes side by side
        plain2, with_ext2 = compare(root, sorted({f for fs in again.values() for f in fs}), tag="-again")
        once = [name for name in differ if again[name] and name in plain2 and plain2.get(name) == with_ext2.get(name)]
        for name in once:
            print(f"differed once, not again (load, not the plugin): {name}: plain {plain.get(name, 'absent')}, "
                  f"with verl-ext {with_ext.get(name, 'absent')}; again both {plain2[name]}")
        differ = [name for name in differ if name not in once]
    for name in differ:
        print(f"DIFFERS: {name}: plain {plain.get(name, 'absent')}, with verl-ext {with_ext.get(name, 'absent')}")
    print(f"{len(differ)} of {len(plain)} tests differ with verl-ext installed")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
