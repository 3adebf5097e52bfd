"""Energy: measured from a hardware counter where one is readable, else estimated —
always labelled which."""

from __future__ import annotations

from onnxamc.runtime import energy


def test_estimate_is_labelled_and_scales_with_work():
    small = energy.estimate(macs=1_000_000, bytes_moved=10_000)
    big = energy.estimate(macs=2_000_000, bytes_moved=20_000)
    assert small.kind == "estimated" and "pJ/MAC" in small.method
    assert abs(big.joules - 2 * small.joules) < 1e-15
    assert energy.estimate(1_000_000, 0, int8_share=1.0).joules < small.joules


def test_without_counters_energy_falls_back_to_estimate(monkeypatch, tmp_path):
    monkeypatch.setattr(energy, "POWERCAP", tmp_path)  # no RAPL zones
    assert energy.measure(lambda: None, "cpu", seconds=0.01) is None
    assert energy.energy_of(lambda: None, "cpu", 10, 10).kind == "estimated"


def test_rapl_counter_is_measured(monkeypatch, tmp_path):
    zone = tmp_path / "intel-rapl:0"
    zone.mkdir()
    counter = zone / "energy_uj"
    counter.write_text("1000")

    def run():  # each call "uses" 5 uJ
        counter.write_text(str(int(counter.read_text()) + 5))
    monkeypatch.setattr(energy, "POWERCAP", tmp_path)
    e = energy.measure(run, "cpu", seconds=0.05)
    assert e.kind == "measured" and "RAPL" in e.method
    assert abs(e.joules - 5e-6) < 1e-9
