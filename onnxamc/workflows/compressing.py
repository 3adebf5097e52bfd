"""Convert and compress in one go: export (for a torch entry point), search (or take a
given policy), apply, recover by training, verify on held-out data, report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from onnxamc.config import RecoveryConfig, SearchConfig
from onnxamc.errors import DataError, warn
from onnxamc.graph.model import save_model
from onnxamc.metrics import Metrics
from onnxamc.policy import Policy
from onnxamc.workflows import preflight
from onnxamc.workflows.recovering import UNLABELLED
from onnxamc.workflows.run import Run
from onnxamc.workflows.searching import SearchOutcome, search

SLOWER = 1.10  # latency ratio above which a given policy's model is called slower (noise: ~5%)


@dataclass
class CompressOutcome:
    search: SearchOutcome | None  # None when a given policy was applied without a search
    model_path: Path | None
    policy_path: Path | None
    before_after: dict[str, Metrics]  # row label -> metrics measured side by side
    policy: Policy | None = None
    report: Any = None  # report.ReportFiles
    recovered: Any = None  # workflows.recovering.Recovered
    models: dict[str, onnx.ModelProto] = field(default_factory=dict, repr=False)
    verified_on: str | None = None  # the data before_after was measured on, if not `data`
    data_name: str | None = None  # what the search and the recovery chose by

    @property
    def kept(self) -> str:
        return self.recovered.kept if self.recovered else "post-training compression"

    def notes(self) -> list[str]:
        """What the figures were measured on and what recovery did, for the report."""
        from onnxamc.workflows.recovering import recovery_notes

        notes = []
        if self.verified_on is not None:
            notes.append(f"Before/after measured on {self.verified_on}: data the search and "
                         "the recovery did not choose by.")
        elif self.data_name is not None:
            notes.append(f"Before/after measured on {self.data_name}, the data the policy and "
                         "the recovery were chosen by (--verify-data measures on data that "
                         "chose nothing).")
        if self.search is None and self.policy_path is not None:
            notes.append("Policy given by the user (no search).")
        return notes + (recovery_notes(self.recovered) if self.recovered else [])


def compress(run: Run, search_config: SearchConfig, recovery: RecoveryConfig, output: Path,
             policy: Policy | None = None, verify_data: Any = None, report: bool = True,
             report_dir: Path | None = None) -> CompressOutcome:
    """Search (or apply `policy`), recover with training data, verify, report."""
    report_dir = (report_dir or output.with_name(output.stem + "-report")) if report else None
    _preflight(run, recovery, output, report_dir, policy)
    verify = run.load(verify_data) if verify_data is not None else run.held_out
    if policy is not None:
        result = _apply_given(run, policy, output)
    else:
        found = search(run, search_config, output)
        result = CompressOutcome(found, found.model_path, found.policy_path, {}, found.policy)
        if found.policy is None:
            return result
        result.before_after = {"original": found.original, "compressed": found.compressed}
        result.models = {"original": run.model, "compressed": found.model}
    result.data_name = run.select_data.name
    if recovery.train_data is not None:
        _recover(run, result, recovery, search_config, output)
    chosen_on = dict(result.before_after)  # measured on `data`, like the trials
    if verify is not None:
        labels = list(result.models)
        evaluator = run.evaluator(verify, runs=run.config.verify_runs)
        measured = evaluator.compare([result.models[l] for l in labels[1:]])
        result.before_after, result.verified_on = dict(zip(labels, measured)), verify.name
    if report_dir is not None:
        result.report = _report(run, result, output, report_dir, chosen_on)
    return result


def _preflight(run: Run, recovery: RecoveryConfig, output: Path, report_dir: Path | None,
               policy: Policy | None) -> None:
    """What compress needs besides the search's own checks, before the search: its
    outputs, the report's plotting package, the training packages and data, a given
    policy that fits the model."""
    preflight.check_outputs(output, output.with_suffix(".policy.json"))
    if report_dir is not None:
        preflight.require("the report (--no-report skips it)", ["matplotlib"], "report")
        preflight.check_report_folder(report_dir)
    if recovery.train_data is not None:
        preflight.require("training recovery (--train-data)", preflight.TRAINING_NEEDS,
                          "train")
        sample = run.load(recovery.train_data, limit=1)  # a missing source fails now
        if not sample.has_labels and (recovery.lr == "auto" or recovery.distill_trials):
            raise DataError(UNLABELLED)
    if policy is not None:
        policy.validate(run.context.layer_ops, run.context.fingerprint)


def _apply_given(run: Run, policy: Policy, output: Path) -> CompressOutcome:
    """Compress with a policy the user gives (no search): apply, measure against the
    original in the same run, write the model and the policy."""
    compressed = run.apply(policy)
    original, measured = run.evaluator(runs=run.config.verify_runs).compare([compressed])
    if (measured.latency_ratio or 0) > SLOWER:
        warn(f"the given policy's model is slower than the original (latency "
             f"x{measured.latency_ratio:.2f}, measured side by side on "
             f"{run.target.name}); written all the same")
    policy.fingerprint, policy.model_name = run.context.fingerprint, run.context.name
    policy.meta = {**policy.meta, "confirmed": measured.to_dict()}
    return CompressOutcome(None, save_model(compressed, output),
                           policy.save(output.with_suffix(".policy.json")),
                           {"original": original, "compressed": measured}, policy,
                           models={"original": run.model, "compressed": compressed})


def _recover(run: Run, result: CompressOutcome, recovery: RecoveryConfig,
             search_config: SearchConfig, output: Path) -> None:
    from onnxamc.workflows.recovering import keep_better, recover

    found = result.search
    storage = found.storage if found else str(search_config.storage
                                              or output.with_suffix(".journal"))
    name = found.study_name if found else output.stem
    recovered = recover(run, result.policy, result.models["compressed"], recovery, storage,
                        name)
    result.recovered, result.policy = recovered, recovered.policy
    result.before_after, result.models = recovered.before_after, recovered.models
    if recovered.recovery_search is not None:
        r = recovered.recovery_search
        result.policy.meta = {**result.policy.meta, "recovery_search": {
            "study": r.study.study_name, "trials": len(r.study.trials), "steps": r.steps,
            "lr": r.lr, "best_val_accuracy": r.best_val_accuracy,
            "val_accuracy_by_lr": r.by_lr}}
        result.policy.save(result.policy_path)
    keep_better(recovered, result.model_path)


def _report(run: Run, result: CompressOutcome, output: Path, directory: Path, chosen_on):
    from onnxamc.report import write_report

    found = result.search
    return write_report(directory, found.result.study if found else None, result.policy,
                        run.context.info.layers, result.before_after,
                        title=f"onnxamc: {output.name}",
                        chosen_trial=found.result.best.number if found else None,
                        notes=result.notes(), markers=chosen_on)
