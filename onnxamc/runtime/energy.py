"""Energy per inference: measured where the platform exposes a counter, else estimated.

Measured: Linux RAPL powercap counters (`/sys/class/powercap/intel-rapl:*/energy_uj`,
the whole CPU package, so other processes count too) or NVML's total-energy counter on
NVIDIA GPUs. Estimated: MACs and bytes moved times per-operation energies from Horowitz,
"Computing's energy problem" (ISSCC 2014, 45 nm): 4.6 pJ per fp32 multiply-add, 0.23 pJ
per int8 one, and 640 pJ per 32-bit DRAM access (160 pJ/byte). Every figure carries its
`kind` ("measured" or "estimated") and `method`; an estimate is a rough ranking aid, not
a measurement, and the two are never mixed in one comparison.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

POWERCAP = Path("/sys/class/powercap")
PJ_PER_MAC = {"float32": 4.6, "int8": 0.23}
PJ_PER_BYTE_DRAM = 160.0


@dataclass(frozen=True)
class Energy:
    joules: float  # per inference
    kind: str  # "measured" | "estimated"
    method: str

    def to_dict(self) -> dict:
        return asdict(self)


def estimate(macs: int, bytes_moved: int, int8_share: float = 0.0) -> Energy:
    """Energy of one inference from MACs and the bytes read from memory (weights)."""
    pj_mac = (1 - int8_share) * PJ_PER_MAC["float32"] + int8_share * PJ_PER_MAC["int8"]
    joules = (macs * pj_mac + bytes_moved * PJ_PER_BYTE_DRAM) * 1e-12
    return Energy(joules, "estimated",
                  f"Horowitz 45nm: {pj_mac:.2f} pJ/MAC, {PJ_PER_BYTE_DRAM:g} pJ/byte DRAM")


def rapl_counters() -> list[Path]:
    """Readable package-level RAPL energy counters (none in most containers and VMs)."""
    found = []
    for zone in sorted(POWERCAP.glob("intel-rapl:*")):
        counter = zone / "energy_uj"
        if ":" in zone.name.split("intel-rapl:", 1)[1]:
            continue  # sub-zones (core, uncore, dram) are inside the package figure
        try:
            int(counter.read_text())
            found.append(counter)
        except (OSError, ValueError):
            continue
    return found


def _nvml_handle(device_index: int = 0):
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)  # raises where unsupported
        return pynvml, handle
    except Exception:  # no pynvml, no driver, or no counter on this GPU
        return None


def measure(run: Callable[[], object], device: str = "cpu", seconds: float = 1.0) -> Energy | None:
    """Energy per call of `run` from a hardware counter, or None where none is readable."""
    if device == "cuda":
        nvml = _nvml_handle()
        if nvml is None:
            return None
        pynvml, handle = nvml
        read = lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) * 1e-3  # mJ -> J
        method = "NVML total energy counter (whole GPU)"
    else:
        counters = rapl_counters()
        if not counters:
            return None
        read = lambda: sum(int(c.read_text()) for c in counters) * 1e-6  # uJ -> J
        method = "RAPL powercap package counter (whole CPU package, other processes included)"
    calls, start_j, start = 0, read(), time.perf_counter()
    while time.perf_counter() - start < seconds:
        run()
        calls += 1
    used = read() - start_j
    if used <= 0:  # the counter wrapped or did not move
        return None
    return Energy(used / calls, "measured", method)


def energy_of(run: Callable[[], object] | None, device: str, macs: int, bytes_moved: int,
              int8_share: float = 0.0, seconds: float = 1.0) -> Energy:
    """Measured if a counter is readable (and `run` is local), else estimated."""
    if run is not None:
        measured = measure(run, device, seconds)
        if measured is not None:
            return measured
    return estimate(macs, bytes_moved, int8_share)
