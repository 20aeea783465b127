"""Child process of ``MathGrader``: reads ``[gold, predicted]`` JSON lines on stdin, writes ``[kind, value]`` lines.

It runs as its own program (``python path/to/_grader_child.py``, importing nothing of verl-ext or verl), not through
multiprocessing, so it works under any parent: a script without a ``__main__`` guard, a thread, a Ray worker. The
parent enforces the time budget by killing it.
"""

import json
import sys


def main() -> None:
    from math_verify import parse, verify

    out = sys.stdout
    sys.stdout = sys.stderr  # keep library prints out of the protocol stream
    out.write(json.dumps(["ready", None]) + "\n")  # imports done: the parent's item budgets start now
    out.flush()
    for line in sys.stdin:
        gold, predicted = json.loads(line)
        try:
            result = ["ok", bool(verify(parse(gold, parsing_timeout=None), parse(predicted, parsing_timeout=None), timeout_seconds=None))]
        except Exception as exc:  # noqa: BLE001 - reported to the parent as an explicit `error` grade
            result = ["error", f"{type(exc).__name__}: {exc}"]
        out.write(json.dumps(result) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
