"""An emulated aarch64 board: try the board workflow of onnxamc without a board.

    python tools/emulated_board.py build     # once: arm64 Debian + onnxruntime + TVM + onnxamc
    python tools/emulated_board.py serve     # tracker + `onnxamc device serve --key arm64-qemu`
    python tools/emulated_board.py status    # what is built, what is serving

`build` makes (and caches, see emulated_board_image.py) an arm64 Debian file system with
Python, onnxruntime, apache-tvm and this checkout's onnxamc, installed by the board's own
pip; it needs the Debian packages mmdebstrap, proot and qemu-user-static, and reaches
Debian's archive and PyPI. `serve` starts a tracker on this host (unless --tracker names
one), runs `onnxamc device serve --tracker ... --key arm64-qemu` inside the board under
QEMU user emulation, writes two target files pointing at it (onnxruntime and TVM, with
generous timeouts: the board is 50-200x slower than this host), prints the tracker, the
key and the target files, and stops everything it started on SIGTERM or Ctrl-C.

Latency measured on it means nothing about real hardware: the agent says it is emulated,
bench labels its numbers, and a search refuses it without --allow-emulated.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import emulated_board_image as image  # noqa: E402

KEY = "arm64-qemu"
TIMEOUT_S = 600  # one request to the board; its session may last 4x that


def target_files(cache: Path, tracker: str, key: str) -> list[Path]:
    """arm64-ort / arm64-tvm as shipped, pointed at the emulated board."""
    folder = cache / "targets"
    folder.mkdir(exist_ok=True)
    remote = (f'\n[remote]\nkey = "{key}"\ntracker = "{tracker}"\ntimeout = {TIMEOUT_S}\n'
              "retries = 1\n")
    ort = ('description = "onnxruntime on the emulated arm64 board (qemu): latency means '
           'nothing"\nruntime = "onnxruntime"\ndevice = "remote"\nthreads = 1\n' + remote)
    tvm = ('description = "TVM cross-compiled for aarch64, run on the emulated arm64 board '
           '(qemu): latency means nothing"\nruntime = "tvm"\ndevice = "remote"\nthreads = 1\n'
           '\n[tvm]\ntarget = { kind = "llvm", mtriple = "aarch64-linux-gnu", '
           'mattr = ["+neon"], num-cores = 1 }\ncross_compiler = "aarch64-linux-gnu-gcc"\n'
           + remote)
    paths = [folder / f"{key}-ort.toml", folder / f"{key}-tvm.toml"]
    for path, text in zip(paths, (ort, tvm)):
        path.write_text(text)
    return paths


def start_tracker(cache: Path, port: int) -> tuple[subprocess.Popen, str]:
    """`onnxamc device tracker` on this host; its process and HOST:PORT."""
    proc = subprocess.Popen([sys.executable, "-m", "onnxamc.cli", "device", "tracker",
                             "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=open(cache / f"tracker-{port}.log", "w"), text=True)
    line = proc.stdout.readline()  # "tracker on 127.0.0.1:PORT; Ctrl-C stops it"
    if not line.startswith("tracker on "):
        proc.kill()
        raise image.BoardError(f"the tracker did not start (see {cache}/tracker-{port}.log)")
    return proc, line.split(" on ")[1].split(";")[0]


def registered(tracker: str, key: str) -> int:
    """How many devices the tracker lists under the key (0 if it does not answer)."""
    from onnxamc.errors import OnnxAmcError
    from onnxamc.runtime.remote import devices_under_key
    from onnxamc.runtime.target import Remote, parse_address

    host, port = parse_address(tracker, "--tracker")
    try:
        return devices_under_key(Remote(key, host, port, timeout=10))
    except OnnxAmcError:
        return 0


def start_agent(cache: Path, tracker: str, key: str, port: int,
                ready_timeout: float) -> subprocess.Popen:
    """The agent inside the board, in a process group of its own; waits until the
    tracker lists it (tens of seconds: Python, onnxruntime and TVM start emulated)."""
    cmd, env = image.emulated(cache, ["onnxamc", "device", "serve", "--tracker", tracker,
                                      "--key", key, "--port", str(port)])
    log = cache / f"agent-{key}.log"
    proc = subprocess.Popen(cmd, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + ready_timeout
    while not registered(tracker, key):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_group(proc)
            tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
            raise image.BoardError(f"the emulated agent did not register within "
                                   f"{ready_timeout:g} s ({tail or 'no output'})")
        time.sleep(1)
    return proc


def stop_group(proc: subprocess.Popen, grace: float = 20) -> None:
    """SIGTERM to the agent's whole process group (proot, qemu, TVM's worker), then
    SIGKILL to whatever is left after `grace` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        if _group_gone(proc, wait):
            break
    proc.poll()


def _group_gone(proc: subprocess.Popen, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader: a zombie still counts as a member of the group
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def serve(args) -> int:
    cache = args.dir
    record = image.read_record(cache)
    if "device" not in record:
        raise image.BoardError(f"no board built in {cache}: run `python tools/emulated_board.py "
                               "build` first")
    if record.get("onnxamc") != image.source_stamp():
        raise image.BoardError("the board's onnxamc is older than this checkout: run "
                               "`python tools/emulated_board.py build` (it reinstalls only it)")
    serving = cache / f"serve-{args.key}.json"
    stopping: list[str] = []
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda signum, _: stopping.append(signal.Signals(signum).name))
    tracker_proc, tracker = (None, args.tracker) if args.tracker else \
        start_tracker(cache, args.tracker_port)
    agent = None
    try:
        agent = start_agent(cache, tracker, args.key, args.port, args.ready_timeout)
        paths = target_files(cache, tracker, args.key)
        serving.write_text(json.dumps(
            {"pid": os.getpid(), "agent_pid": agent.pid, "tracker": tracker, "key": args.key,
             "targets": [str(p) for p in paths]}))
        print(f"emulated arm64 board serving: key {args.key} at tracker {tracker}; "
              f"ONNXAMC_TRACKER={tracker}; targets {paths[0]} {paths[1]}; "
              "SIGTERM or Ctrl-C stops it", flush=True)
        while not stopping and agent.poll() is None and \
                (tracker_proc is None or tracker_proc.poll() is None):
            time.sleep(0.5)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if agent is not None:
            stop_group(agent)
        if tracker_proc is not None:
            tracker_proc.terminate()
            tracker_proc.wait(30)
        serving.unlink(missing_ok=True)
    if stopping:
        print(f"emulated board stopped ({stopping[0]})", file=sys.stderr)
        return 0
    print(f"the emulated agent or the tracker ended by itself (see {cache}/agent-{args.key}.log)",
          file=sys.stderr)
    return 1


def status(args) -> int:
    record = image.read_record(args.dir)
    if "device" not in record:
        print(f"no board built in {args.dir}")
        return 1
    d = record["device"]
    fresh = "current" if record.get("onnxamc") == image.source_stamp() else \
        "older than this checkout: run build"
    full = record.get("full_build", {})
    print(f"board in {args.dir}: Debian {record['suite']} arm64, {record['size_mb']} MB, "
          f"built {full.get('built', '?')} in {full.get('seconds', '?')} s; last build "
          f"{record['built']} ({', '.join(record['steps'])}, {record['seconds']} s)")
    print(f"  {d['machine']} Python {d['python']}, onnxruntime {d.get('onnxruntime')}, "
          f"tvm {d.get('tvm')}, onnxamc {fresh}; emulated: {d.get('emulated')}")
    files = sorted(args.dir.glob("serve-*.json"))
    if not files:
        print("  not serving")
    for path in files:
        serving = json.loads(path.read_text())
        try:
            os.kill(serving["pid"], 0)
        except OSError:
            print(f"  not serving {serving['key']} (stale {path.name})")
            continue
        count = registered(serving["tracker"], serving["key"])
        print(f"  serving (pid {serving['pid']}): key {serving['key']} at tracker "
              f"{serving['tracker']}, {'registered' if count else 'NOT registered'}; targets "
              f"{' '.join(serving['targets'])}")
    return 0


def build(args) -> int:
    start = time.perf_counter()
    record, steps = image.build(args.dir, args.rebuild, log=lambda m: print(m, flush=True))
    print(f"board ready in {args.dir} ({record['size_mb']} MB; this run "
          f"{time.perf_counter() - start:.0f} s: {', '.join(steps) or 'up to date'})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="emulated_board.py", description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=lambda p: Path(p).expanduser(), default=image.DEFAULT_DIR,
                        help=f"cache folder of the board (default {image.DEFAULT_DIR})")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("build", help="build (or bring up to date) the board's file system")
    p.add_argument("--rebuild", action="store_true", help="start again from nothing")
    p.set_defaults(run=build)
    p = sub.add_parser("serve", help="run the agent in the board (and a tracker) until stopped")
    p.add_argument("--tracker", metavar="HOST:PORT", help="an existing tracker to register with "
                   "(default: start one on 127.0.0.1)")
    p.add_argument("--tracker-port", type=int, default=9190,
                   help="first port for the tracker started here (default 9190)")
    p.add_argument("--port", type=int, default=9090, help="first port for the agent (9090)")
    p.add_argument("--key", default=KEY, help=f"device key (default {KEY})")
    p.add_argument("--ready-timeout", type=float, default=600,
                   help="seconds to wait for the agent to register (default 600)")
    p.set_defaults(run=serve)
    p = sub.add_parser("status", help="what is built and what is serving")
    p.set_defaults(run=status)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except image.BoardError as exc:
        print(f"emulated_board: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
