"""What installing verl-ext costs a process that imports verl: ``import verl`` with verl's plugins on (verl-ext
loaded through its entry point) against plain verl (``VERL_USE_EXTERNAL_PLUGINS=none``), in the same run.

    python benchmarks/import_cost.py [--repeats 7]

Each repeat runs one fresh interpreter per variant, alternating, and times ``import verl`` inside it (interpreter
start excluded); the figure is the ratio of the medians. Also reported: verl modules and verl-ext modules in
``sys.modules`` afterwards, whether the platform got resolved, and any stderr line one variant prints that the
other does not (warnings). Target: ratio <= 1.15, no extra stderr lines, platform unresolved. The last line is one
JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

PROBE = """
import json, sys, time
start = time.perf_counter()
import verl
seconds = time.perf_counter() - start
import verl.plugin.platform.platform_manager as manager
print(json.dumps({"seconds": seconds, "verl_modules": sum(m.split('.')[0] == 'verl' for m in sys.modules),
                  "verl_ext_modules": sum(m.split('.')[0] == 'verl_ext' for m in sys.modules),
                  "platform_resolved": manager._current_platform is not None}))
"""


def probe(plugins: str) -> tuple[dict, list[str]]:
    env = {k: v for k, v in os.environ.items() if k != "VERL_PLATFORM"}
    env["VERL_USE_EXTERNAL_PLUGINS"] = plugins
    res = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1]), [line for line in res.stderr.splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    probe("none"), probe("auto")  # warm the file cache for both
    times = {"none": [], "auto": []}
    last = {}
    for _ in range(args.repeats):
        for plugins in ("none", "auto"):
            result, stderr = probe(plugins)
            times[plugins].append(result["seconds"])
            last[plugins] = (result, stderr)
    plain, ours = statistics.median(times["none"]), statistics.median(times["auto"])
    extra = sorted(set(last["auto"][1]) - set(last["none"][1]))
    (plain_r, _), (ours_r, _) = last["none"], last["auto"]
    print(f"import verl, plain (VERL_USE_EXTERNAL_PLUGINS=none): median {plain:.3f} s over {args.repeats}; "
          f"{plain_r['verl_modules']} verl modules")
    print(f"import verl, with verl-ext: median {ours:.3f} s; {ours_r['verl_modules']} verl modules, "
          f"{ours_r['verl_ext_modules']} verl_ext modules; platform resolved: {ours_r['platform_resolved']}")
    print(f"ratio {ours / plain:.3f}; stderr lines only with verl-ext: {extra or 'none'}")
    print(json.dumps({"import_plain_s": round(plain, 3), "import_with_verl_ext_s": round(ours, 3),
                      "ratio": round(ours / plain, 3), "verl_modules_plain": plain_r["verl_modules"],
                      "verl_modules_with": ours_r["verl_modules"], "verl_ext_modules": ours_r["verl_ext_modules"],
                      "platform_resolved": ours_r["platform_resolved"], "extra_stderr_lines": len(extra),
                      "repeats": args.repeats}))


if __name__ == "__main__":
    main()
