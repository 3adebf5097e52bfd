"""Targets and devices: which targets this machine can measure on, the device agent a
board runs, and the tracker that queues boards by key."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from onnxamc.errors import OnnxAmcError, TargetError
from onnxamc.runtime.target import Target, load_target, shipped_targets


@dataclass
class TargetStatus:
    name: str
    path: Path | None
    target: Target | None  # None when the file does not validate
    error: str | None  # why it does not validate
    unavailable: str | None  # why this machine cannot measure on it now


def target_statuses(paths: Sequence[str | Path] = (), probe_remote: bool = False
                    ) -> list[TargetStatus]:
    from onnxamc.runtime.measure import unavailable_reason

    out = []
    for spec in [*shipped_targets(), *paths]:
        try:
            t = load_target(spec)
        except TargetError as exc:
            out.append(TargetStatus(Path(spec).stem, Path(spec), None, str(exc), None))
            continue
        out.append(TargetStatus(t.name, t.path, t, None, unavailable_reason(t, probe_remote)))
    return out


def serve(host: str, port: int, tracker: str | None, key: str, silent: bool = False):
    from onnxamc.runtime.agent import serve as start
    from onnxamc.runtime.target import parse_address
    from onnxamc.runtime.tvm_build import require_tvm

    require_tvm("device agent")
    address = parse_address(tracker, "--tracker") if tracker else None
    if address and not key:
        raise OnnxAmcError("--tracker needs --key (the device key hosts ask for)")
    return start(host, port, port + 100, address, key, silent)


def tracker(host: str, port: int):
    from onnxamc.runtime.agent import start_tracker
    from onnxamc.runtime.tvm_build import require_tvm

    require_tvm("tracker")
    return start_tracker(host, port, port + 10, silent=False)
