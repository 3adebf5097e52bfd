"""The emulated aarch64 board's file system: built once from registries, cached, and the
command line that runs a program inside it under QEMU user-mode emulation.

Layout of the cache folder (default ~/.cache/onnxamc/arm64-board):

    rootfs/              Debian bookworm arm64, packages only extracted (mmdebstrap
                         --variant=extract: no maintainer script runs, so building it needs
                         no emulation): python3, python3-venv, libstdc++6, libgomp1
    rootfs/opt/onnxamc   the board's venv, made and filled by the emulated Python itself
                         (pip install --no-index "onnxamc[board]"), as a board owner does
    wheels/              aarch64 wheels downloaded on the host (pip download --platform),
                         pinned by constraints.txt, plus this checkout's onnxamc wheel
    cpuinfo              the /proc/cpuinfo the board sees (a Raspberry Pi 5's Cortex-A76)
    board.json           what was built: versions, stamps, build time, size

How it runs, and why this way (measured on this machine, a Debian 12 VM):
- binfmt_misc is not mounted here, and registering a handler would change the whole
  machine; so the kernel cannot run an aarch64 binary by itself.
- `qemu-aarch64-static -L rootfs python3` runs one process, but the agent's TVM server
  starts its worker with execve(sys.executable): the kernel refuses the aarch64 binary
  ("Exec format error"). chroot with the static qemu copied in fails the same way.
- `proot -q qemu-aarch64-static -r rootfs` passes every execve of the emulated tree
  through qemu, without privileges: that works.
- onnxruntime's cpuinfo library parses /proc/cpuinfo and crashes (SIGSEGV at import) on
  the x86 host's text, so the board sees a Cortex-A76 cpuinfo (bound over /proc/cpuinfo)
  and qemu emulates that CPU (QEMU_CPU=cortex-a76, a Raspberry Pi 5's: NEON, LSE atomics,
  dot product, no SVE). Not an older core: with cortex-a72 (no LSE atomics, so glibc's
  locks are exclusive load/store pairs) every session process the TVM server forks hung
  in qemu 7.2 (Debian 12), before it answered; with cortex-a76 and max none did.
- The agent is told it is emulated ($ONNXAMC_EMULATED), so every latency it measures is
  labelled, and a search refuses it unless told otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
DEFAULT_DIR = Path("~/.cache/onnxamc/arm64-board").expanduser()
SUITE, PYTHON, GLIBC_MINOR = "bookworm", "3.11", 36  # Debian 12 arm64: Python 3.11, glibc 2.36
PACKAGES = ["python3", "python3-venv", "libstdc++6", "libgomp1"]
HOST_TOOLS = {"mmdebstrap": "mmdebstrap", "proot": "proot",
              "qemu-aarch64-static": "qemu-user-static"}
VENV = "/opt/onnxamc"
QEMU_CPU = "cortex-a76"
EMULATED = "qemu-aarch64 user mode (Cortex-A76) on an x86_64 host: tools/emulated_board.py"
CPU_BLOCK = ("processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 "
             "sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\n"
             "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\n"
             "CPU part\t: 0xd0b\nCPU revision\t: 1\n")


class BoardError(Exception):
    """A one-line reason the board cannot be built or run."""


def require_host_tools() -> None:
    missing = [pkg for tool, pkg in HOST_TOOLS.items() if shutil.which(tool) is None]
    if missing:
        raise BoardError("the emulated board needs the Debian packages "
                         f"{' '.join(sorted(set(missing)))} (apt-get install them)")


def write_cpuinfo(cache: Path) -> Path:
    """A Cortex-A76 /proc/cpuinfo with as many processors as the host has (onnxruntime's
    cpuinfo also reads the host's /sys, and the two must agree)."""
    count = os.cpu_count() or 1
    text = "\n".join(CPU_BLOCK.format(i=i) for i in range(count))
    path = cache / "cpuinfo"
    path.write_text(text + "\nHardware\t: onnxamc emulated arm64 board (qemu user mode)\n")
    return path


def emulated(cache: Path, argv: list[str], binds: dict[str, str] | None = None,
             env: dict[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that run `argv` inside the board."""
    cmd = ["proot", "-q", "qemu-aarch64-static", "-r", str(cache / "rootfs"),
           "-b", "/proc", "-b", "/dev", "-b", "/sys", "-b", f"{write_cpuinfo(cache)}:/proc/cpuinfo"]
    for outside, inside in (binds or {}).items():
        cmd += ["-b", f"{outside}:{inside}"]
    environment = {"PATH": f"{VENV}/bin:/usr/local/bin:/usr/bin:/bin", "HOME": "/root",
                   "LANG": "C.UTF-8", "TMPDIR": "/tmp", "PYTHONUNBUFFERED": "1",
                   "QEMU_CPU": QEMU_CPU, "ONNXAMC_EMULATED": EMULATED}
    if "PROOT_NO_SECCOMP" in os.environ:  # proot's own switch, for kernels that need it
        environment["PROOT_NO_SECCOMP"] = os.environ["PROOT_NO_SECCOMP"]
    return cmd + ["-w", "/root", *argv], {**environment, **(env or {})}


def run_emulated(cache: Path, argv: list[str], what: str, **kw) -> str:
    """Run argv inside the board to the end; its stdout, or BoardError with its tail."""
    cmd, env = emulated(cache, argv, **kw)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise BoardError(f"{what} failed inside the board: {' | '.join(tail)}")
    return done.stdout


def _host(cmd: list[str], what: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [l for l in (done.stderr or done.stdout).splitlines() if "ignored" not in l]
        raise BoardError(f"{what} failed: {' | '.join(lines[-3:])}")


def make_rootfs(cache: Path) -> None:
    rootfs = cache / "rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    _host(["mmdebstrap", "--quiet", "--variant=extract", "--arch=arm64",
           f"--include={','.join(PACKAGES)}", SUITE, str(rootfs)], "mmdebstrap (arm64 rootfs)")
    for folder in ("root", "tmp", "opt"):
        (rootfs / folder).mkdir(exist_ok=True)


def build_onnxamc_wheel(wheels: Path) -> Path:
    """This checkout as a wheel (what a board owner copies to the board)."""
    for old in wheels.glob("onnxamc-*.whl"):
        old.unlink()
    _host([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
           "-w", str(wheels), str(CHECKOUT)], "building the onnxamc wheel")
    return next(wheels.glob("onnxamc-*.whl"))


def download_wheels(wheels: Path, onnxamc_wheel: Path) -> None:
    """aarch64 wheels of onnxamc[board] and its dependencies, at constraints.txt's pins."""
    shutil.copy(CHECKOUT / "constraints.txt", wheels / "constraints.txt")
    platforms = [f"manylinux_2_{minor}_aarch64" for minor in range(17, GLIBC_MINOR + 1)]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:",
           "--python-version", PYTHON, "--implementation", "cp", "--abi",
           f"cp{PYTHON.replace('.', '')}", "--platform", "manylinux2014_aarch64",
           "-c", str(wheels / "constraints.txt"), "--find-links", str(wheels), "-d", str(wheels)]
    for platform in platforms:
        cmd += ["--platform", platform]
    _host(cmd + [f"{onnxamc_wheel}[board]"], "downloading the aarch64 wheels")


def install_in_board(cache: Path, everything: bool) -> None:
    """The board's own pip installs onnxamc[board] from the wheel folder (no network)."""
    binds = {str(cache / "wheels"): "/wheels"}
    if everything:
        shutil.rmtree(cache / "rootfs" / VENV.lstrip("/"), ignore_errors=True)
        run_emulated(cache, ["/usr/bin/python3", "-m", "venv", VENV], "python3 -m venv")
        args = ["-c", "/wheels/constraints.txt", "onnxamc[board]"]
    else:  # only onnxamc changed: its wheel alone
        wheel = next((cache / "wheels").glob("onnxamc-*.whl")).name
        args = ["--no-deps", "--force-reinstall", f"/wheels/{wheel}"]
    run_emulated(cache, [f"{VENV}/bin/pip", "install", "-q", "--no-cache-dir", "--no-index",
                         "--find-links", "/wheels", *args], "pip install", binds=binds)


SMOKE = ("import json, onnxruntime, tvm; from onnxamc.runtime.agent import describe_device; "
         "print(json.dumps(describe_device()))")


def stamp(*paths: Path) -> str:
    """A hash of the files under paths (what decides whether a step runs again)."""
    digest = hashlib.sha256()
    for root in paths:
        files = sorted(root.rglob("*")) if root.is_dir() else [root]
        for f in files:
            if f.is_file() and "__pycache__" not in f.parts:
                digest.update(str(f.relative_to(CHECKOUT)).encode() + f.read_bytes())
    return digest.hexdigest()[:16]


def source_stamp() -> str:
    return stamp(CHECKOUT / "onnxamc", CHECKOUT / "targets", CHECKOUT / "models",
                 CHECKOUT / "pyproject.toml")


def read_record(cache: Path) -> dict:
    try:
        return json.loads((cache / "board.json").read_text())
    except (OSError, ValueError):
        return {}


def build(cache: Path, rebuild: bool = False, log=print) -> tuple[dict, list[str]]:
    """Build what is missing or out of date; returns the record (board.json) and the
    steps this call ran."""
    require_host_tools()
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "wheels").mkdir(exist_ok=True)
    record = {} if rebuild else read_record(cache)
    start = time.perf_counter()
    steps = []
    if rebuild or not (cache / "rootfs" / "usr" / "bin" / "python3").exists():
        log(f"arm64 root file system (Debian {SUITE}: {', '.join(PACKAGES)}) ...")
        make_rootfs(cache)
        record, steps = {}, steps + ["rootfs"]
    source = source_stamp()  # of the sources the wheel is built from, now
    wheel = build_onnxamc_wheel(cache / "wheels")
    deps = stamp(CHECKOUT / "constraints.txt", CHECKOUT / "pyproject.toml")
    venv_ok = (cache / "rootfs" / VENV.lstrip("/") / "bin" / "python").exists()
    if record.get("deps") != deps or not venv_ok:
        log("aarch64 wheels, then pip install inside the board (minutes under emulation) ...")
        download_wheels(cache / "wheels", wheel)
        install_in_board(cache, everything=True)
        steps.append("dependencies")
    elif record.get("onnxamc") != source:
        log("onnxamc changed: reinstalling its wheel inside the board ...")
        install_in_board(cache, everything=False)
        steps.append("onnxamc")
    if steps or "device" not in record:
        log("checking the board: onnxruntime, tvm and the agent import ...")
        record["device"] = json.loads(run_emulated(cache, [f"{VENV}/bin/python", "-c", SMOKE],
                                                   "importing the agent").splitlines()[-1])
    record.update(deps=deps, onnxamc=source, suite=SUITE)
    if steps:  # what the last build that did something did, and how long it took
        record.update(steps=steps, seconds=round(time.perf_counter() - start, 1),
                      size_mb=round(folder_size(cache / "rootfs") / 2**20),
                      built=time.strftime("%Y-%m-%d %H:%M:%S"))
    if "dependencies" in steps:  # kept across later onnxamc-only builds
        record["full_build"] = {k: record[k] for k in ("seconds", "built", "steps")}
    (cache / "board.json").write_text(json.dumps(record, indent=2))
    return record, steps


def folder_size(path: Path) -> int:
    return sum(f.lstat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
