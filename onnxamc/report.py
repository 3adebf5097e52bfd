"""Reports: Pareto plot, per-layer policy chart, search history, before/after table,
as PNG files plus an HTML page and a markdown summary.

Reads what the study stored (trial params are the policy, user attributes the
metrics), so a report can be made again later from the storage alone.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import optuna

from onnxamc.files import save_figure, write_text
from onnxamc.metrics import Metrics, format_quality
from onnxamc.policy import Policy
from onnxamc.search.pareto import pareto_indices

FLOAT_BITS = 32


@dataclass
class ReportFiles:
    html: Path
    markdown: Path
    plots: list[Path]


def write_report(directory: str | Path, study: optuna.Study | None, policy: Policy | None,
                 layers: Sequence, before_after: dict[str, Metrics] | None = None,
                 title: str = "onnxamc report", chosen_trial: int | None = None,
                 notes: Sequence[str] = (),
                 markers: dict[str, Metrics] | None = None) -> ReportFiles:
    """Write the plots, report.html and report.md into `directory`.

    `layers` are layer-table rows (graph.Layer); `before_after` maps a row label
    ("original", "compressed", ...) to Metrics measured side by side;
    `study` is None when no search ran (a given policy); `notes` are lines on recovery;
    `markers` are the rows to mark on the Pareto plot when `before_after` was measured on
    other data than the trials (default: `before_after`).
    """
    from onnxamc.files import check_writable

    directory = Path(directory)
    check_writable(directory / "report.html")
    directory.mkdir(parents=True, exist_ok=True)
    trials = [] if study is None else [
        t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if "metrics" in t.user_attrs]
    plots = [_pareto_plot(directory / "pareto.png", trials,
                          before_after if markers is None else markers, chosen_trial)]
    if study is not None:
        plots.append(_history_plot(directory / "history.png", study, trials))
    if policy is not None:
        plots.append(_policy_plot(directory / "policy.png", policy, layers))
    plots += _importance_plots(directory, study, trials)
    if chosen_trial is not None:
        notes = [f"The policy charted is trial #{chosen_trial}'s: the one the search chose."
                 ] + list(notes)
    md = _markdown(title, study, trials, policy, layers, before_after, plots, notes)
    md_path = write_text(directory / "report.md", md)
    html_path = write_text(directory / "report.html", _html(title, md))
    return ReportFiles(html_path, md_path, plots)


MIN_TRIALS_FOR_IMPORTANCE = 8
IMPORTANCE_TOP = 12


def _importance_plots(directory: Path, study, trials) -> list[Path]:
    """Which layers' actions decided accuracy and latency: Optuna's fANOVA parameter
    importances, drawn by Optuna's own matplotlib visualisation (one PNG per metric).
    None when the study is too small; a metric is left out when no parameter varied."""
    if study is None or len(trials) < MIN_TRIALS_FOR_IMPORTANCE:
        return []
    import matplotlib

    # the importance of the measured metrics, over the trials that measured them
    view = optuna.create_study(directions=study.directions)
    view.add_trials([t for t in trials if _finite(_m(t).quality)
                     and _finite(_m(t).latency_ratio)])
    metric = _m(trials[0]).metric
    with matplotlib.rc_context():  # Optuna's plots switch the global style to ggplot
        paths = [_importance_plot(directory / f"importance-{name}.png", view, key, name)
                 for key, name in (("quality", metric), ("latency_ratio", "latency"))]
    return [p for p in paths if p is not None]


def _importance_plot(path: Path, view: optuna.Study, key: str, name: str) -> Path | None:
    import warnings

    import matplotlib.pyplot as plt
    from optuna.visualization.matplotlib import plot_param_importances

    target = lambda t: getattr(_m(t), key)  # noqa: E731
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            ranked = list(optuna.importance.get_param_importances(view, target=target))
            ax = plot_param_importances(view, target=target, target_name=name,
                                        params=ranked[:IMPORTANCE_TOP])
    except (RuntimeError, ValueError, ZeroDivisionError):  # parameters that never varied
        plt.close("all")
        return None
    ax.set_title(f"What decided {name}: the {min(IMPORTANCE_TOP, len(ranked))} most "
                 "important actions", loc="left", fontsize=11)  # replaces Optuna's title
    ax.set_ylabel("layer:action")
    ax.set_xlabel("importance (fANOVA: share of the variance explained)")
    ax.figure.set_size_inches(7.2, 4.4)
    ax.figure.tight_layout()
    save_figure(ax.figure, path, dpi=110)
    plt.close(ax.figure)
    return path


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _m(trial) -> Metrics:
    return Metrics.from_dict(trial.user_attrs["metrics"])


def _metric_points(trials):
    """(latency ratio, quality) of each trial; nan where it has none."""
    points = []
    for t in trials:
        m = _m(t)
        points.append((m.latency_ratio if _finite(m.latency_ratio) else math.nan,
                       m.quality if m.quality is not None else math.nan))
    return points


def _front(points, higher_is_better: bool) -> list[int]:
    """Indices of the (latency, quality) points no other dominates, by rising latency."""
    rows = [i for i, p in enumerate(points) if _finite(p[0]) and _finite(p[1])]
    direction = "maximize" if higher_is_better else "minimize"
    front = pareto_indices([points[i] for i in rows], ["minimize", direction])
    return sorted((rows[j] for j in front), key=lambda i: points[i][0])


def _pareto_plot(path, trials, before_after, chosen_trial):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    points = _metric_points(trials)
    feasible = [all(v <= 0 for v in t.constraints.values()) for t in trials]
    for ok, color, label in ((True, "tab:blue", "feasible trial"),
                             (False, "lightgray", "infeasible trial")):
        xs = [p[0] for p, f in zip(points, feasible) if f == ok]
        ys = [p[1] for p, f in zip(points, feasible) if f == ok]
        if xs:
            ax.scatter(xs, ys, s=18, c=color, label=label, zorder=2)
    baselines = [(t.user_attrs["baseline"], p) for t, p in zip(trials, points)
                 if t.user_attrs.get("baseline", "original") != "original"]
    for i, (label, p) in enumerate(baselines):  # the hand-made starting points
        ax.scatter([p[0]], [p[1]], marker="^", s=60, facecolors="none", edgecolors="black",
                   zorder=3, label=None if i else "uniform baseline")
        ax.annotate(label, p, textcoords="offset points", xytext=(6, -10), fontsize=7)
    front = _front(points, not trials or _m(trials[0]).higher_is_better)
    if front:
        ax.plot([points[i][0] for i in front], [points[i][1] for i in front], "-",
                c="tab:blue", lw=1, alpha=0.6, label="Pareto front", zorder=1)
    markers = {"original": ("*", "black"), "compressed": ("D", "tab:red")}
    for label, metrics in (before_after or {}).items():
        if not _finite(metrics.latency_ratio) or metrics.quality is None:
            continue
        marker, color = markers.get(label, ("s", "tab:green"))
        ax.scatter([metrics.latency_ratio], [metrics.quality], marker=marker, s=90,
                   c=color, edgecolors="white", label=label, zorder=3)
    if chosen_trial is not None:
        for t, p in zip(trials, points):
            if t.number == chosen_trial:
                ax.annotate(f"#{t.number}", p, textcoords="offset points", xytext=(5, 5))
    ax.set_xlabel("latency / original (measured, same run)")
    metric = _m(trials[0]).metric if trials else next(
        (m.metric for m in (before_after or {}).values()), "quality")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(f"{metric} against measured latency")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


def _history_plot(path, study, trials):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.2), dpi=110)
    xs = [t.number for t in trials]
    ys = [t.values[0] for t in trials]  # the first objective of a multi-objective study
    ax.scatter(xs, ys, s=14, c="tab:blue", label="trial")
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    best, running = [], None
    for t, y in zip(trials, ys):
        ok = all(v <= 0 for v in t.constraints.values())
        if ok and (running is None or (y > running if maximize else y < running)):
            running = y
        best.append(running if running is not None else math.nan)
    ax.step(xs, best, where="post", c="tab:red", label="best feasible")
    ax.set_xlabel("trial")
    ax.set_ylabel("objective")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


def _policy_plot(path, policy: Policy, layers):
    import matplotlib.pyplot as plt

    names = [l.name for l in layers]
    fig, ax = plt.subplots(figsize=(max(6.4, 0.28 * len(names)), 3.6), dpi=110)
    keep = [policy.action(n).keep for n in names]
    sparsity = [policy.action(n).sparsity for n in names]
    bits = [policy.action(n).bits for n in names]
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], keep, width=0.4, color="tab:blue", label="channels kept")
    ax.bar([i + 0.2 for i in x], sparsity, width=0.4, color="tab:orange", label="sparsity")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share")
    ax2 = ax.twinx()
    ax2.plot(list(x), bits, "o", c="tab:red", label="bits")
    ax2.set_ylabel("bits")
    ax2.set_ylim(0, FLOAT_BITS + 2)
    ax.set_xticks(list(x))
    ax.set_xticklabels(names, rotation=90, fontsize=7)
    ax.set_title("chosen policy per layer (a channel group keeps the largest of its layers' keep)",
                 fontsize=9, pad=28)
    handles, labels = ax.get_legend_handles_labels()
    more, more_labels = ax2.get_legend_handles_labels()
    ax.legend(handles + more, labels + more_labels, fontsize=8, loc="lower center",
              bbox_to_anchor=(0.5, 1.08), ncol=3, frameon=False)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


def _ratio_text(m) -> str:
    """The latency ratio with its interval and flags, as the search output gives it."""
    if m.latency_ratio is None:
        return "-"
    return m.describe_latency().removeprefix("latency ").lstrip("x")


def _fmt(value, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "ratio":
        return f"{value:.3f}"
    if kind == "kb":
        return f"{value / 1024:.1f}"
    return f"{value:,}"


def _markdown(title, study, trials, policy, layers, before_after, plots, notes) -> str:
    lines = [f"# {title}", ""]
    if study is not None:
        objective = study.user_attrs.get("objective", "")
        lines += [f"Study `{study.study_name}`: {len(trials)} completed trials. Objective: "
                  f"{objective}.", ""]
    quality = (study.user_attrs.get("metric") if study is not None else None) or next(
        (m.metric_label for m in (before_after or {}).values() if m.metric_label), None)
    if quality:
        lines += [f"Quality: {quality}.", ""]
    for note in notes:
        lines += [note, ""]
    if before_after:
        metric = next(iter(before_after.values())).metric
        lines += [f"| model | {metric} | latency ms (median) | latency ratio | size KB | MACs "
                  "| params |", "|---|---|---|---|---|---|---|"]
        for label, m in before_after.items():
            median = f"{m.latency.median_ms:.3f}" if m.latency else "-"
            lines.append(f"| {label} | {format_quality(m.metric, m.quality)} | {median} | "
                         f"{_ratio_text(m)} | {_fmt(m.size_bytes, 'kb')} | "
                         f"{_fmt(m.macs, 'int')} | {_fmt(m.params, 'int')} |")
        lines += ["", "Latency: batch 1, measured interleaved with the original in the same "
                  "process; ratios of medians with their 95% interval over the paired rounds "
                  "(flagged uncertain when wider than the allowed spread after re-measuring; "
                  "an interval containing 1 is no measurable change).", ""]
        busy = [m.busy for m in before_after.values() if m.busy]
        if busy and max(b["other_cores"] for b in busy) >= 0.5:
            lines += [f"The machine was busy while measuring: other processes used up to "
                      f"{max(b['other_cores'] for b in busy):.1f} of {busy[0]['cpus']} cores.",
                      ""]
    for plot in plots:
        lines += [f"![{plot.stem}]({plot.name})", ""]
    if policy is not None:
        lines += ["## Policy per layer", "",
                  "| layer | op | MACs | keep | sparsity | bits | other |",
                  "|---|---|---|---|---|---|---|"]
        shown = {"keep", "sparsity", "bits"}
        for l in layers:
            a = policy.action(l.name)
            other = ", ".join(f"{k}={v}" for k, v in a.to_dict().items() if k not in shown)
            lines.append(f"| {l.name} | {l.op_type} | {l.macs:,} | {a.keep:.2f} | "
                         f"{a.sparsity:.2f} | {a.bits} | {other or '-'} |")
        lines.append("")
    return "\n".join(lines)


def _html(title: str, markdown: str) -> str:
    """A self-contained page: tables from the markdown, plots as images beside it."""
    body, table = [], []

    def flush_table():
        if not table:
            return
        rows = [r.strip("|").split("|") for r in table if not set(r) <= set("|-")]
        out = ["<table>"]
        for i, row in enumerate(rows):
            tag = "th" if i == 0 else "td"
            out.append("<tr>" + "".join(f"<{tag}>{html.escape(c.strip())}</{tag}>" for c in row)
                       + "</tr>")
        out.append("</table>")
        body.append("\n".join(out))
        table.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush_table()
        if line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("!["):
            name = line[line.index("(") + 1: line.index(")")]
            body.append(f'<p><img src="{html.escape(name)}" alt="{html.escape(name)}"></p>')
        elif line.strip():
            body.append(f"<p>{html.escape(line).replace('`', '')}</p>")
    flush_table()
    style = ("body{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;"
             "padding:3px 8px;text-align:right}th{background:#f3f3f3}img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
