"""What the commands print: aligned text tables and one-line summaries."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from onnxamc.metrics import Metrics, format_drop, format_quality


def aligned(rows: list[list[str]], right: set[int] = frozenset(), rule: bool = True) -> str:
    """Columns padded to their widest cell; a dashed rule under the head row."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) if i in right else c.ljust(w)
                       for i, (c, w) in enumerate(zip(r, widths))).rstrip() for r in rows]
    if rule:
        lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def layer_table(info) -> str:
    head = ["#", "layer", "op", "c_in", "c_out", "kernel", "stride", "groups", "fmap",
            "params", "MACs", "%MACs"]
    rows = [head]
    for l in info.layers:
        rows.append([str(l.index), l.name, l.op_type, str(l.c_in), str(l.c_out),
                     "x".join(map(str, l.kernel)) or "-", "x".join(map(str, l.stride)) or "-",
                     str(l.groups), "x".join(map(str, l.out_size)) or "-", f"{l.params:,}",
                     f"{l.macs:,}", f"{100 * l.macs / info.macs:.1f}" if info.macs else "-"])
    return (aligned(rows, {0, 3, 4, 7, 9, 10, 11}) + "\n\n"
            + f"{len(info.layers)} layers, {info.macs:,} MACs per sample, "
              f"{info.params:,} parameters, fingerprint {info.fingerprint}")


def structure(groups, blocks) -> str:
    """Channel groups (what prunes together, or what blocks it; a rule that failed is
    named apart from a deliberate block), a count line, and removable blocks."""
    lines = ["channel groups (keep= prunes a whole group; its layers share the channels):"]
    for g in groups:
        state = "prunable" if g.prunable else f"RULE FAILED: {g.rule_failure}" \
            if g.rule_failure else f"blocked by {g.blocked_by}" if g.blocked_by \
            else "single channel"
        mixed = " (normalised across channels: pruning shifts its statistics)" if g.mixed else ""
        lines.append(f"  [{g.index}] {g.name}: {g.channels} channels, {state}{mixed}")
        lines.append(f"      layers: {', '.join(g.layers) or '-'}")
        lines.append(f"      read by: {', '.join(g.consumers) or '-'}")
    failed = sum(1 for g in groups if g.rule_failure)
    lines.append(f"{sum(g.prunable for g in groups)} groups prunable of {len(groups)}, "
                 f"{failed} blocked by rule failures")
    lines.append("removable residual blocks (remove=true on any of their layers):")
    lines += [f"  {b.name}: {', '.join(b.layers)}" for b in blocks] or ["  none"]
    return "\n".join(lines)


EMULATED_NOTE = ("EMULATED: latency measured on an emulated board ({}) means nothing about "
                 "real hardware")


def bench(names: Sequence[str], results: Sequence[Metrics], threads: int | None) -> str:
    base = results[0]
    head = ["model", base.metric, "latency ms (median)", "p90", "cv", "x latency", "size KB",
            "x size", "zipped KB", "bits/weight", "MACs", "params", "energy mJ"]
    rows = [head]
    for name, r in zip(names, results):
        lat = [f"{r.latency.median_ms:.3f}", f"{r.latency.p90_ms:.3f}", f"{r.latency.cv:.2f}",
               f"{r.latency_ratio or 1.0:.3f}"] if r.latency else ["unsupported", "-", "-", "-"]
        energy = f"{r.energy['joules'] * 1e3:.3f} ({r.energy['kind'][0]})" if r.energy else "-"
        rows.append([Path(name).name, format_quality(r.metric, r.quality), *lat,
                     f"{r.size_bytes / 1024:.1f}", f"{r.size_bytes / base.size_bytes:.3f}",
                     f"{(r.size_zipped_bytes or 0) / 1024:.1f}", f"{r.bits_per_weight or 0:.2f}",
                     f"{r.macs:,}", f"{r.params:,}", energy])
    if "robust_quality" in base.extra:
        rows[0].insert(2, f"FGSM {base.extra['fgsm_epsilon']:g}")
        for row, r in zip(rows[1:], results):
            row.insert(2, f"{100 * r.extra['robust_quality']:.2f}%")
    timed = next((r for r in results if r.latency), None)
    runs = timed.latency.runs if timed else 0
    quality = (base.metric_label or base.metric) if base.quality is not None else \
        "quality: none (no data)"
    emulated = next((r.emulated for r in results if r.emulated), None)
    return (aligned(rows, set(range(1, len(rows[0])))) + "\n\n" + per_output(names, results)
            + f"{quality}; latency on target {base.target or 'cpu-ort'}: batch 1, "
              f"{threads or 'the target'}'s thread(s), {runs} interleaved runs; ratios to "
              f"{Path(names[0]).name}; energy (m)easured or (e)stimated"
            + ("\n" + EMULATED_NOTE.format(emulated) if emulated else ""))


def per_output(names: Sequence[str], results: Sequence[Metrics]) -> str:
    """One line per model with each output's own metric, when there are several."""
    lines = []
    for name, r in zip(names, results):
        if len(r.per_output) > 1:
            lines.append(f"{Path(name).name}: " + ", ".join(
                f"{out} {p['metric']} {format_quality(p['metric'], p['quality'])}"
                for out, p in r.per_output.items()))
    return "\n".join(lines) + ("\n" if lines else "")


def before_after(rows: dict[str, Metrics]) -> str:
    return "\n".join(f"  {label:<28} {m.describe_quality()}  latency x{m.latency_ratio or 1:.3f}"
                     f"  size {m.size_bytes / 1024:.1f} KB" for label, m in rows.items())


def search_summary(outcome) -> list[str]:
    """The lines `search` and `compress` print about the study and the chosen policy."""
    r = outcome.result
    stopped = f", {r.stopped} stopped early" if r.stopped else ""
    lines = [f"study {outcome.study_name!r} in {outcome.storage}: {len(r.study.trials)} trials "
             f"({r.new_trials} new{stopped}, {r.trials_per_minute:.1f} trials/min)"]
    o, c = outcome.original, outcome.compressed
    if outcome.quality:
        lines.append(outcome.quality + (f"; bound: {outcome.bound}" if outcome.bound else ""))
    chosen_on = f" on {o.data}" if outcome.held_out and o.data else ""
    times = f" ({c.latency.median_ms:.3f} ms vs {o.latency.median_ms:.3f} ms, re-measured " \
            "interleaved)" if c.latency is not None and o.latency is not None else ""
    lines.append(f"best trial #{r.best.number}: {c.describe_quality()} (original "
                 f"{format_quality(o.metric, o.quality)}{chosen_on}), "
                 f"{c.describe_latency()}{times}, size x{c.size_ratio:.3f}")
    if len(c.per_output) > 1:
        lines.append("  per output: " + ", ".join(
            f"{out} {p['metric']} {format_quality(p['metric'], p['quality'])}"
            for out, p in c.per_output.items()))
    if outcome.held_out:
        ho, hc = outcome.held_out
        lines.append(f"held out ({ho.data}, chose nothing): {hc.describe_quality()} (original "
                     f"{format_quality(ho.metric, ho.quality)}, drop "
                     f"{format_drop(hc.metric, hc.quality_drop)})")
    if c.busy and c.busy.get("other_cores", 0) >= 0.5:
        lines.append(f"machine busy while measuring: other processes used "
                     f"{c.busy['other_cores']:.1f} of {c.busy['cpus']} cores")
    if "uncertain" in c.latency_flags:
        lines.append("warning: every candidate's latency stayed uncertain after re-measuring; "
                     "chosen at the slow end of its interval (measure again on a quiet machine)")
    if r.predictor:
        lines.append("predictor: {evaluations_saved} evaluations saved, {wrong} of {audited} "
                     "audited skips wrong".format(**r.predictor))
    if r.pareto:
        lines.append(f"Pareto front: {len(r.pareto)} policies (trials "
                     f"{', '.join(str(t.number) for t in r.pareto)})")
    return lines


def targets(statuses) -> str:
    rows = [["target", "runtime", "device", "threads", "status", "description / problem"]]
    for st in statuses:
        t = st.target
        if t is None:
            rows.append([st.name, "-", "-", "-", "INVALID", st.error])
            continue
        where = f"remote:{t.remote.key}@{t.remote.tracker}" if t.remote else t.device
        rows.append([t.name, t.runtime, where, str(t.threads),
                     "ok" if st.unavailable is None else "unavailable",
                     st.unavailable or t.description])
    return aligned(rows, rule=False)
