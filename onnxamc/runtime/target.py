"""Deployment targets: one TOML file says where and how a model's latency is measured.

A target names the runtime (onnxruntime or TVM), the device (local CPU, local CUDA, or a
remote board reached through a TVM RPC tracker), thread count, execution-provider
options, the TVM target as a JSON dict (TVM 0.27 rejects target strings), the tuning
budget and database, and the tracker address. The shipped targets live in
`targets/*.toml` (installed as the package `onnxamc.targets`, so an installed onnxamc
finds them); a path to
any other TOML file works the same. Schema (every key but `runtime` is optional):

    description = "one line"
    runtime = "onnxruntime"          # onnxruntime | tvm
    device = "cpu"                   # cpu | cuda | remote
    threads = 1                      # intra-op threads (ORT) / num-cores hint (TVM)

    [onnxruntime]
    provider_options = {}            # passed to the execution provider as is
    io_binding = true                # CUDA: inputs/outputs bound on the device

    [tvm]
    target = { kind = "llvm" }       # a TVM target as a dict, never a string
    host = { kind = "llvm" }         # host target for GPU targets (optional)
    cross_compiler = "aarch64-linux-gnu-gcc"   # export_library with this compiler
    tuning_trials = 0                # MetaSchedule budget per model; 0 = untuned
    tuning_database = "~/.cache/onnxamc/tuning/NAME"   # reused across trials and runs

    [remote]
    key = "rpi4"                     # device key the agent registered with the tracker
    tracker = "127.0.0.1:9190"       # overridden by $ONNXAMC_TRACKER when set
    device = "cpu"                   # cpu | cuda on the board
    timeout = 60                     # seconds for one request before 'unreachable'
    retries = 2
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from onnxamc.errors import TargetError
from onnxamc.targets import TARGETS_DIR

DEFAULT_TARGET = "cpu-ort"
RUNTIMES = ("onnxruntime", "tvm")
DEVICES = ("cpu", "cuda", "remote")
TRACKER_ENV = "ONNXAMC_TRACKER"
TUNING_CACHE = Path("~/.cache/onnxamc/tuning")

_TOP_KEYS = {"description", "runtime", "device", "threads", "onnxruntime", "tvm", "remote"}
_SECTION_KEYS = {
    "onnxruntime": {"provider_options", "io_binding"},
    "tvm": {"target", "host", "cross_compiler", "tuning_trials", "tuning_database"},
    "remote": {"key", "tracker", "device", "timeout", "retries"},
}


@dataclass(frozen=True)
class Remote:
    key: str
    tracker_host: str
    tracker_port: int
    device: str = "cpu"
    timeout: float = 60.0
    retries: int = 2

    @property
    def tracker(self) -> str:
        return f"{self.tracker_host}:{self.tracker_port}"


@dataclass(frozen=True)
class Target:
    name: str
    runtime: str = "onnxruntime"
    device: str = "cpu"
    threads: int = 1
    description: str = ""
    provider_options: dict = field(default_factory=dict)
    io_binding: bool = True
    tvm_target: dict | None = None
    tvm_host: dict | None = None
    cross_compiler: str | None = None
    tuning_trials: int = 0
    tuning_database: Path | None = None
    remote: Remote | None = None
    path: Path | None = None

    @property
    def is_remote(self) -> bool:
        return self.device == "remote"

    @property
    def compute_device(self) -> str:
        """Where kernels run: cpu or cuda, on this machine or on the board."""
        return self.remote.device if self.remote else self.device

    def describe(self) -> str:
        where = f"remote {self.remote.key!r} via {self.remote.tracker}" if self.remote \
            else self.device
        tuned = f", tuned {self.tuning_trials} trials" if self.runtime == "tvm" \
            and self.tuning_trials else ""
        return f"{self.name}: {self.runtime} on {where}, {self.threads} thread(s){tuned}"

    def to_dict(self) -> dict:
        return {"name": self.name, "runtime": self.runtime, "device": self.device,
                "threads": self.threads, "tvm_target": self.tvm_target,
                "remote": None if self.remote is None else
                {"key": self.remote.key, "tracker": self.remote.tracker},
                "tuning_trials": self.tuning_trials}


def cpu_ort(threads: int = 1) -> Target:
    """The default target, also what the old `threads=` parameter stands for."""
    return Target(DEFAULT_TARGET, "onnxruntime", "cpu", threads,
                  "onnxruntime CPU execution provider on this machine")


def shipped_targets() -> dict[str, Path]:
    """The target files that come with onnxamc, by name."""
    return {p.stem: p for p in sorted(TARGETS_DIR.glob("*.toml"))}


def load_target(spec: "str | Path | Target | None" = None, threads: int | None = None) -> Target:
    """A target by shipped name or TOML path; None is cpu-ort. `threads` overrides."""
    if isinstance(spec, Target):
        target = spec
    elif spec is None:
        target = cpu_ort()
    else:
        path = shipped_targets().get(str(spec)) or Path(spec).expanduser()
        if not path.is_file():
            raise TargetError(f"no target {str(spec)!r}: give a shipped name "
                              f"({', '.join(shipped_targets())}) or a .toml file")
        target = parse_target(path)
    if threads is not None and threads != target.threads:
        from dataclasses import replace

        target = replace(target, threads=_positive_int("threads", threads, target.name))
    return target


def parse_target(path: Path) -> Target:
    """Read and validate one target file (one-line TargetError on any problem)."""
    name = path.stem
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise TargetError(f"target {name}: cannot read {path}: {exc}") from None
    return target_from_dict(name, raw, path)


def target_from_dict(name: str, raw: dict, path: Path | None = None) -> Target:
    _no_unknown(name, "", raw, _TOP_KEYS)
    for section, keys in _SECTION_KEYS.items():
        value = raw.get(section, {})
        if not isinstance(value, dict):
            raise TargetError(f"target {name}: [{section}] must be a table")
        _no_unknown(name, section + ".", value, keys)
    runtime = _choice(name, "runtime", raw.get("runtime"), RUNTIMES)
    device = _choice(name, "device", raw.get("device", "cpu"), DEVICES)
    threads = _positive_int("threads", raw.get("threads", 1), name)
    ort_cfg, tvm_cfg = raw.get("onnxruntime", {}), raw.get("tvm", {})
    provider_options = ort_cfg.get("provider_options", {})
    if not isinstance(provider_options, dict):
        raise TargetError(f"target {name}: onnxruntime.provider_options must be a table")
    tvm_target = tvm_host = None
    trials, database = 0, None
    if runtime == "tvm":
        tvm_target = tvm_cfg.get("target")
        if not isinstance(tvm_target, dict) or "kind" not in tvm_target:
            raise TargetError(f"target {name}: tvm.target must be a table with a 'kind', e.g. "
                              '{ kind = "llvm" } (TVM 0.27 rejects target strings)')
        tvm_host = tvm_cfg.get("host")
        if tvm_host is not None and (not isinstance(tvm_host, dict) or "kind" not in tvm_host):
            raise TargetError(f"target {name}: tvm.host must be a table with a 'kind'")
        trials = tvm_cfg.get("tuning_trials", 0)
        if not isinstance(trials, int) or trials < 0:
            raise TargetError(f"target {name}: tvm.tuning_trials must be an integer >= 0")
        database = Path(os.path.expandvars(str(tvm_cfg.get(
            "tuning_database", TUNING_CACHE / name)))).expanduser()
    elif tvm_cfg:
        raise TargetError(f"target {name}: a [tvm] table needs runtime = \"tvm\"")
    remote = _remote(name, raw.get("remote", {})) if device == "remote" else None
    if device != "remote" and raw.get("remote"):
        raise TargetError(f"target {name}: a [remote] table needs device = \"remote\"")
    compute = remote.device if remote else device
    if tvm_target is not None and (tvm_target["kind"] == "cuda") != (compute == "cuda"):
        raise TargetError(f"target {name}: tvm.target kind {tvm_target['kind']!r} does not "
                          f"match device {compute!r}")
    return Target(name, runtime, device, threads, str(raw.get("description", "")),
                  provider_options, bool(ort_cfg.get("io_binding", True)), tvm_target, tvm_host,
                  tvm_cfg.get("cross_compiler"), trials, database, remote, path)


def _remote(name: str, cfg: dict) -> Remote:
    key = cfg.get("key")
    if not key or not isinstance(key, str):
        raise TargetError(f"target {name}: a remote target needs remote.key (the device key)")
    tracker = os.environ.get(TRACKER_ENV) or cfg.get("tracker", "127.0.0.1:9190")
    host, port = parse_address(tracker, f"target {name}: remote.tracker")
    timeout = cfg.get("timeout", 60)
    if not isinstance(timeout, (int, float)) or timeout <= 0:
        raise TargetError(f"target {name}: remote.timeout must be a positive number of seconds")
    retries = cfg.get("retries", 2)
    if not isinstance(retries, int) or retries < 0:
        raise TargetError(f"target {name}: remote.retries must be an integer >= 0")
    device = _choice(name, "remote.device", cfg.get("device", "cpu"), ("cpu", "cuda"))
    return Remote(key, host, port, device, float(timeout), retries)


def parse_address(text: str, what: str) -> tuple[str, int]:
    host, _, port = str(text).rpartition(":")
    if not host or not port.isdigit():
        raise TargetError(f"{what} must be HOST:PORT, got {text!r}")
    return host, int(port)


def _choice(name: str, key: str, value, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise TargetError(f"target {name}: {key} must be one of {', '.join(allowed)}, "
                          f"got {value!r}")
    return value


def _positive_int(key: str, value, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise TargetError(f"target {name}: {key} must be an integer >= 1, got {value!r}")
    return value


def _no_unknown(name: str, prefix: str, table: dict, known: set[str]) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise TargetError(f"target {name}: unknown key {prefix}{unknown[0]} "
                          f"(known: {', '.join(sorted(known))})")
