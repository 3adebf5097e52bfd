"""Counts over the whole corpus: `python tests/corpus [-k TEXT] [-j N] [--json FILE]`.

Runs every case with this interpreter (set PYTHONPATH to measure another checkout) and
prints one line per case that is not clean, then the counts per class. The report of
issue 15 quotes these counts before and after the hardening branch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from corpus.cases import CASES  # noqa: E402
from corpus.inputs import build_inputs  # noqa: E402
from corpus.runner import CLASSES, run_case  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="", help="only cases whose id contains this")
    parser.add_argument("-j", type=int, default=2, help="cases run at once (default 2)")
    parser.add_argument("--json", help="also write {case: outcome} here")
    args = parser.parse_args()
    root = os.geteuid() == 0
    cases = [c for c in CASES if args.k in c.id and (c.root_ok or not root)]
    with tempfile.TemporaryDirectory(prefix="onnxamc-corpus-") as tmp:
        inputs = build_inputs(Path(tmp) / "inputs")
        with ThreadPoolExecutor(args.j) as pool:
            outcomes = list(pool.map(lambda c: run_case(c, inputs, Path(tmp) / c.id), cases))
    counts = Counter(o.kind for o in outcomes)
    for case, o in zip(cases, outcomes):
        if o.kind != "clean":
            owner = f" [issue {case.owner}]" if case.owner else ""
            print(f"{case.id}{owner}: {o.describe()}")
    print(f"{len(cases)} cases: " + ", ".join(f"{counts[k]} {k}" for k in CLASSES))
    if args.json:
        Path(args.json).write_text(json.dumps(
            {c.id: {"kind": o.kind, "why": o.why, "exit": o.returncode, "owner": c.owner,
                    "seconds": round(o.seconds, 1), "stderr": o.stderr[-2000:]}
             for c, o in zip(cases, outcomes)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
