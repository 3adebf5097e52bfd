"""Every `onnxamc` command of the README runs as written (issue 15: the README's example
policy was refused by the bundled model it was written for).

The commands are read from the README's bash blocks. They run in order in one folder
holding the files they name (`FILES` says what each is), so a later example reads what an
earlier one wrote (`bench ... resnet20-compressed.onnx` after `compress`). To keep the
run short the test appends flags to some commands (a later flag wins over the README's):
`SHORT` lists them. Commands that need what a test machine has not (a board, a database
server) must fail in one line naming it (`OUTSIDE`); the agent and the tracker are
started and stopped with Ctrl-C (`SERVERS`).

The fast test checks that every command parses and that the example policy fits the
bundled model; the slow one (--runslow, about 15 minutes on 2 busy cores) runs them all.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
SHORT = {  # appended to keep a run short: fewer trials, runs, samples, training steps
    "search": "--trials 3 --runs 5 --eval-samples 200 --no-progress",
    "compress": "--trials 3 --runs 5 --eval-samples 200 --no-progress --epochs 0.01 "
                "--trial-steps 5",
    "bench": "--runs 10",
}
SHORT_DISTILL_TRIALS = "--distill-trials 2"  # for the example that searches 8
OUTSIDE = {  # command prefix -> what its one-line error names (no board, no database here)
    "onnxamc search model.onnx --data data.npz --calibration calib.npz --agent nsga2": "db-host",
    "onnxamc search model.onnx --latency 0.6 --target ./my-board.toml": "unreachable",
    "onnxamc bench model.onnx --target arm64-ort": "unreachable",
}
STATUS = ("onnxamc targets my-board.toml --probe", "onnxamc targets --probe")  # a table
SERVERS = ("onnxamc device tracker", "onnxamc device serve")
FILES = """
model.onnx, r20.onnx, models/resnet20.onnx   the bundled ResNet-20
r32.onnx                                     the bundled MobileNetV2 (a model to transfer to)
data.npz, calib.npz                          the bundled Fashion-MNIST evaluation and calibration subsets
p.json, mine.policy.json, r20.policy.json    the README's example policy
sens.json                                    `onnxamc sensitivity` on two layers
my-board.toml                                the README's example target file
mypkg/nets.py, ckpt.pt, val.npz, train.npz   a small torch CNN on 3x32x32 inputs and its data
small.onnx                                   the bundled ResNet-20 at int8
"""


def readme_commands() -> list[str]:
    """`onnxamc ...` lines of the README's bash blocks, continuations joined, comments cut."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("onnxamc "):
                commands.append(" ".join(line.split()))
    return commands


def example_policy() -> dict:
    return json.loads(re.search(r"```json\n(.*?)```", README.read_text(), re.S).group(1))


def example_target() -> str:
    return re.search(r"```toml\n(.*?)```", README.read_text(), re.S).group(1)


def shortened(command: str) -> list[str]:
    argv = shlex.split(command)[1:]
    extra = SHORT.get(argv[0], "")
    if "--distill-trials" in argv:
        extra += " " + SHORT_DISTILL_TRIALS
    return argv + extra.split()


def test_readme_commands_parse_and_the_example_policy_fits_the_bundled_model():
    from onnxamc import api
    from onnxamc.cli.parser import build_parser
    from onnxamc.policy import Policy

    commands = readme_commands()
    assert len(commands) >= 20 and "onnxamc compress --trials 30" in commands
    parser = build_parser()
    for command in commands:
        argv = shlex.split(command)[1:]
        args = parser.parse_args(argv)  # a renamed or removed flag exits here
        assert hasattr(args, "run"), command
        parser.parse_args(shortened(command))  # the flags the slow test appends exist
    for prefix in (*OUTSIDE, *STATUS, *SERVERS):
        assert any(c.startswith(prefix) for c in commands), f"no README command {prefix}"
    policy = Policy.from_dict(example_policy())
    context = api.load_context(None)
    policy.validate(context.layer_ops, context.fingerprint)


@pytest.fixture
def workspace(tmp_path, resnet20, mobilenetv2) -> Path:
    """The folder the README's commands run in, with the files they name (FILES)."""
    for name in ("model.onnx", "r20.onnx", "models/resnet20.onnx"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        shutil.copy(resnet20, tmp_path / name)
    shutil.copy(mobilenetv2, tmp_path / "r32.onnx")
    from onnxamc.models import DATA_DIR

    for name, subset in (("data.npz", "eval"), ("calib.npz", "calib")):
        with np.load(DATA_DIR / f"fashion-mnist-{subset}.npz") as f:
            np.savez(tmp_path / name, input=f["images"].astype(np.float32) / 255,
                     labels=f["labels"])
    for name in ("p.json", "mine.policy.json", "r20.policy.json"):
        (tmp_path / name).write_text(json.dumps(example_policy()))
    (tmp_path / "my-board.toml").write_text(example_target())
    _torch_package(tmp_path)
    _cli(tmp_path, "sensitivity", "model.onnx", "--data", "data.npz", "--eval-samples", "200",
         "--layers", "layers.0.conv1,fc", "--actions", "int8", "-o", "sens.json")
    _cli(tmp_path, "apply", "model.onnx", "--uniform", "bits=8", "-o", "small.onnx")
    return tmp_path


def _torch_package(folder: Path) -> None:
    import torch

    (folder / "mypkg").mkdir()
    (folder / "mypkg" / "__init__.py").write_text("")
    (folder / "mypkg" / "nets.py").write_text(
        "from torch import nn\n\n\ndef build():\n"
        "    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),\n"
        "                         nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU(),\n"
        "                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))\n")
    sys.path.insert(0, str(folder))
    try:
        from mypkg.nets import build

        torch.manual_seed(0)
        torch.save(build().state_dict(), folder / "ckpt.pt")
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("mypkg.nets", None)
        sys.modules.pop("mypkg", None)
    rng = np.random.default_rng(0)
    for name, count in (("val.npz", 64), ("train.npz", 256)):
        np.savez(folder / name, x=rng.random((count, 3, 32, 32), dtype=np.float32),
                 labels=rng.integers(0, 10, count))


def _cli(cwd: Path, *argv: str, env: dict | None = None, timeout: float = 1200):
    result = subprocess.run([sys.executable, "-m", "onnxamc.cli", *argv], cwd=cwd, text=True,
                            capture_output=True, timeout=timeout, env={**os.environ,
                                                                      **(env or {})})
    assert result.returncode == 0, f"onnxamc {' '.join(argv)}: {result.stderr[-2000:]}"
    return result


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server(cwd: Path, argv: list[str], env: dict) -> str:
    """Start, wait for its ready line, Ctrl-C; the problem, or "" if it behaved."""
    proc = subprocess.Popen([sys.executable, "-m", "onnxamc.cli", *argv], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    line = proc.stdout.readline()  # "... on 127.0.0.1:PORT ...; Ctrl-C stops it"
    time.sleep(1)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    if "Ctrl-C stops it" not in line or "Traceback" in err or len(err.strip().splitlines()) > 1:
        return f"started with {line!r}, stopped with exit {proc.returncode}: {err[-1000:]}"
    return ""


@pytest.mark.slow
def test_every_readme_command_runs_as_written(workspace):
    env = {**os.environ, "ONNXAMC_TRACKER": f"127.0.0.1:{_closed_port()}"}
    problems = []
    for command in readme_commands():
        argv = shortened(command)
        if command.startswith(SERVERS):
            problems.append(_server(workspace, argv, env))
            continue
        result = subprocess.run([sys.executable, "-m", "onnxamc.cli", *argv], cwd=workspace,
                                env=env, text=True, capture_output=True, timeout=1200)
        outside = next((v for k, v in OUTSIDE.items() if command.startswith(k)), None)
        if "Traceback" in result.stderr:
            problems.append(f"{command}: a traceback: {result.stderr[-1500:]}")
        elif outside is not None:
            lines = result.stderr.strip().splitlines()
            if result.returncode != 2 or len(lines) != 1 or outside not in lines[0]:
                problems.append(f"{command}: expected one line naming {outside!r}, got exit "
                                f"{result.returncode}: {result.stderr[-800:]}")
        elif result.returncode != 0 and not (command.startswith(STATUS)
                                             and result.returncode == 1):
            problems.append(f"{command}: exit {result.returncode}: {result.stderr[-1500:]}")
    problems = [p for p in problems if p]
    assert not problems, "\n".join(problems)
