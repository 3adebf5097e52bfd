"""Running one corpus case as a user would (a fresh `onnxamc` process in an empty
folder) and sorting what happened into the issue's classes.

Classes: `clean` (the expected outcome: a one-line error, exit 2, no traceback, nothing
left behind; or, for an input onnxamc should accept, exit 0 and a correct result),
`traceback`, `hang` (no exit within the case's time-out), `silent` (exit 0 where an
error was due, or a wrong result), `untidy` (exit 2 and no traceback, but more than one
line on stderr or files left behind).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

CLASSES = ("clean", "traceback", "hang", "silent", "untidy")
# The command as `onnxamc` runs it; a case's prelude runs first (e.g. to make a package
# absent, as on a machine without it: `sys.modules[name] = None` makes its import fail).
DRIVER = "import sys\n{prelude}\nfrom onnxamc.cli import main\nsys.exit(main(sys.argv[1:]))\n"
NO_MODULE = "sys.modules.update({{m: None for m in {names!r}}})"


@dataclass
class Case:
    """One input and what onnxamc should do with it.

    `argv` is the command line, split on spaces, with {PLACEHOLDER}s from the corpus
    inputs and {cwd} (the empty folder the command runs in). `expect` is "error" (exit 2
    with `match` in the one line), "ok" (exit 0; `check(cwd, result)` asserts the result)
    or "either" (a correct result or a one-line error). `owner` names the helper whose
    branch fixes it when it is not this one's. `prepare(cwd, inputs)` makes files the case needs
    before it runs (they do not count as left behind)."""

    id: str
    argv: str
    expect: str = "error"
    match: str = ""
    owner: str | None = None
    prepare: Callable[[Path, dict], None] | None = None
    check: Callable[[Path, "Outcome"], None] | None = None
    missing: tuple[str, ...] = ()  # packages made absent for this run
    prelude: str = ""
    interrupt_after: str | float | None = None  # SIGINT once this path under cwd exists,
    # or after this many seconds
    timeout: float = 120.0
    root_ok: bool = True  # False: permissions mean nothing to root (the case is skipped)


@dataclass
class Outcome:
    kind: str
    returncode: int | None
    stdout: str
    stderr: str
    left: list[str] = field(default_factory=list)
    seconds: float = 0.0
    why: str = ""

    def describe(self) -> str:
        tail = self.stderr.strip().splitlines()[-3:]
        return (f"{self.kind} ({self.why}); exit {self.returncode}, {self.seconds:.1f} s, "
                f"left {self.left}; stderr: {' | '.join(tail)[:600]}")


def run_case(case: Case, inputs: dict[str, str], cwd: Path, python: str = sys.executable,
             env: dict[str, str] | None = None) -> Outcome:
    cwd.mkdir(parents=True, exist_ok=True)
    if case.prepare is not None:
        case.prepare(cwd, inputs)
    before = _files(cwd) | _files(Path(inputs["ROOT"]))
    argv = [a.format(cwd=cwd, **inputs) for a in case.argv.split()]
    prelude = case.prelude + ("\n" + NO_MODULE.format(names=list(case.missing))
                              if case.missing else "")
    command = [python, "-c", DRIVER.format(prelude=prelude), *argv]
    env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1", "COLUMNS": "100"}
    start = time.time()
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)
    try:
        if case.interrupt_after is not None:
            _interrupt_when(proc, cwd, case.interrupt_after, case.timeout)
        out, err = proc.communicate(timeout=case.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return Outcome("hang", None, out, err, seconds=time.time() - start,
                       why=f"no exit within {case.timeout:.0f} s")
    left = sorted(str(p) for p in (_files(cwd) | _files(Path(inputs["ROOT"]))) - before)
    outcome = Outcome("", proc.returncode, out, err, left, time.time() - start)
    outcome.kind, outcome.why = classify(case, outcome, cwd)
    return outcome


def classify(case: Case, o: Outcome, cwd: Path) -> tuple[str, str]:
    lines = [l for l in o.stderr.splitlines() if l.strip()]
    if "Traceback (most recent call last)" in o.stderr or o.returncode not in (0, 1, 2, 130):
        return "traceback", "a traceback or a crash"
    if o.returncode == 0 and case.expect != "error":
        return _checked(case, o, cwd)
    if o.returncode == 0:
        return "silent", "exit 0 where an error was due"
    if o.returncode != (130 if case.interrupt_after else 2):
        return "untidy", f"exit {o.returncode}"
    if case.expect == "ok":
        return "untidy", "an error where a result was due"
    if len(lines) != 1:
        return "untidy", f"{len(lines)} lines on stderr"
    if o.left and not case.interrupt_after:  # an interrupted search keeps its study
        return "untidy", "files left behind"
    if case.match and case.match not in lines[0]:
        return "untidy", f"the line does not say {case.match!r}"
    return "clean", "one line"


def _checked(case: Case, o: Outcome, cwd: Path) -> tuple[str, str]:
    if case.check is None:
        return "clean", "accepted"
    try:
        case.check(cwd, o)
    except AssertionError as exc:
        return "silent", f"wrong result: {exc}"
    return "clean", "correct result"


def _interrupt_when(proc: subprocess.Popen, cwd: Path, after: str | float,
                    timeout: float) -> None:
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) once the file `after`
    names exists in `cwd`, or after `after` seconds."""
    start = time.time()
    while time.time() < start + timeout and proc.poll() is None:
        path = cwd / after if isinstance(after, str) else None
        if (path is None and time.time() > start + after) or \
                (path is not None and path.exists() and path.stat().st_size > 0):
            time.sleep(1.0)  # into the next trial
            os.killpg(proc.pid, signal.SIGINT)
            return
        time.sleep(0.2)


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()
