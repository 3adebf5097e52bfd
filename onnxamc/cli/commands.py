"""One function per command: arguments in, api call, printed result, exit code."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from onnxamc.cli import tables


def inspect(args) -> int:
    from onnxamc import api
    from onnxamc.graph import parse_input_shapes

    model, door = api.front_door(args.model, parse_input_shapes(args.input_shape))
    context = api.load_context(model)
    groups, blocks = context.channels.groups, context.blocks
    if args.json:
        print(json.dumps({**context.info.to_dict(), "groups": [g.to_dict() for g in groups],
                          "blocks": [b.to_dict() for b in blocks],
                          "front_door": door.lines()}, indent=2))
        return 0
    print("\n".join(door.lines()))
    print()
    print(tables.layer_table(context.info))
    print()
    print(tables.structure(groups, blocks))
    return 0


def export(args) -> int:
    from onnxamc import api

    api.export(args.entry, args.input_shape, args.output, args.weights)
    print(f"wrote {args.output} (outputs match torch)")
    return 0


def apply(args) -> int:
    from onnxamc import api

    policy = api.uniform_policy(args.model, args.uniform, args.input_shape) if args.uniform \
        else api.load_policy(args.policy)
    options = dict(calibration=args.calibration, calibration_samples=args.calibration_samples,
                   calibration_method=args.calibration_method,
                   reconstruct=not args.no_reconstruct, channel_multiple=args.channel_multiple,
                   importance=args.importance, preprocess=args.preprocess,
                   input_shapes=args.input_shape, policy_output=args.save_policy)
    if args.uniform and args.latency_guard and any(a.bits == 8 for a in policy.layers.values()):
        print(api.apply_guarded(args.model, policy, args.output, **options)[1])
    else:
        api.apply(args.model, policy, args.output, **options)
    print(f"wrote {args.output}" + (f" and {args.save_policy}" if args.save_policy else ""))
    return 0


def bench(args) -> int:
    from onnxamc import api

    results = api.bench(args.models, None if args.no_data else args.data,
                        fgsm_epsilon=args.fgsm, layer_table=args.layer_table,
                        eval_samples=args.eval_samples, threads=args.threads, runs=args.runs,
                        target=args.target, metric=args.metric, preprocess=args.preprocess,
                        input_shapes=args.input_shape)
    if args.json:
        print(json.dumps([{"model": m, **r.to_dict()} for m, r in zip(args.models, results)],
                         indent=2))
        return 0
    print(tables.bench(args.models, results, args.threads))
    for name, r in zip(args.models, results):
        if r.latency_error:
            print(f"{Path(name).name}: {r.latency_error}")
        if r.extra.get("layer_table"):
            t = r.extra["layer_table"]
            print(f"{Path(name).name}: layer table predicts {t['predicted_ms']:.3f} ms vs "
                  f"{r.latency.median_ms:.3f} ms measured (error {100 * t['error']:+.1f}%; "
                  f"scaled by the first model's ratio: {100 * t['calibrated_error']:+.1f}%), "
                  f"{len(t['layers'])} layers, {t['measured_now']} newly measured, "
                  f"table {t['table']}")
    return 0


def search(args) -> int:
    from onnxamc import api

    try:
        outcome = api.search(args.model, args.data, args.output, **_search_options(args))
    except KeyboardInterrupt:
        return _interrupted()
    if not _print_search(outcome):
        return 1
    print(f"wrote {outcome.model_path} and {outcome.policy_path}")
    return 0


def compress(args) -> int:
    from onnxamc import api

    options = _search_options(args)
    export_shape = None
    if api.is_torch_entry(args.model):  # --input-shape is the export shape
        export_shape = args.input_shape[-1] if args.input_shape else None
        options["input_shapes"] = None
    try:
        outcome = api.compress(
            args.model, args.data, args.output, policy=args.policy, input_shape=export_shape,
            weights=args.weights, verify_data=args.verify_data, report=not args.no_report,
            report_dir=args.report_dir, train_data=args.train_data, epochs=args.epochs,
            train_seconds=args.train_seconds, lr=args.lr, distill=args.distill,
            feature_distill=args.feature_distill, distill_trials=args.distill_trials,
            trial_steps=args.trial_steps, qat=not args.no_qat, **options)
    except KeyboardInterrupt:
        return _interrupted()
    if outcome.search is not None and not _print_search(outcome.search):
        return 1
    if outcome.search is None:
        print(f"applied the given policy {args.policy}")
    for note in outcome.notes():
        print(note)
    if outcome.verified_on is not None:
        print(f"verified on {outcome.verified_on}:")
    if outcome.search is None or outcome.recovered is not None or outcome.verified_on:
        print(tables.before_after(outcome.before_after))
    print(f"wrote {outcome.model_path} and {outcome.policy_path}")
    if outcome.report is not None:
        print(f"report: {outcome.report.html}")
    return 0


def report(args) -> int:
    from onnxamc import api

    files = api.report(args.storage, args.output, study=args.study, model=args.model,
                       policy=args.policy)
    print(f"wrote {files.html}, {files.markdown} and {len(files.plots)} plots")
    return 0


def sensitivity(args) -> int:
    from onnxamc import api
    from onnxamc.errors import PolicyError
    from onnxamc.policy import parse_uniform
    from onnxamc.search.sensitivity import DEFAULT_ACTIONS

    actions = dict(DEFAULT_ACTIONS)
    if args.actions:
        labels = [a.strip() for a in args.actions.split(",") if a.strip()]
        unknown = [a for a in labels if a not in DEFAULT_ACTIONS]
        if unknown:
            raise PolicyError(f"unknown actions {', '.join(unknown)}; built-in: "
                              f"{', '.join(DEFAULT_ACTIONS)} (or give --action FIELD=VALUE,...)")
        actions = {a: DEFAULT_ACTIONS[a] for a in labels}
    elif args.action:
        actions = {}
    actions.update({spec: parse_uniform(spec) for spec in args.action})
    layers = [l.strip() for l in args.layers.split(",") if l.strip()] if args.layers else None
    if args.output:
        from onnxamc.files import check_writable

        check_writable(args.output)  # before the work, not after it
    table = api.sensitivity(args.model, args.data, actions, layers,
                            eval_samples=args.eval_samples, calibration=args.calibration,
                            calibration_samples=args.calibration_samples,
                            calibration_method=args.calibration_method, threads=args.threads,
                            progress=args.progress, metric=args.metric,
                            preprocess=args.preprocess, input_shapes=args.input_shape)
    if args.output:
        table.save(args.output)
    print(json.dumps(table.to_dict(), indent=2) if args.json else table.format())
    if args.output and not args.json:
        print(f"wrote {args.output}")
    return 0


def targets(args) -> int:
    from onnxamc import api

    statuses = api.targets(args.paths, probe_remote=args.probe)
    print(tables.targets(statuses))
    if not args.probe and any(st.target and st.target.is_remote for st in statuses):
        print("\nremote targets were not contacted; --probe asks their tracker")
    return 1 if any(st.target is None for st in statuses) else 0


def device_serve(args) -> int:
    from onnxamc import api
    from onnxamc.cli.serving import run_until_stopped

    def start():
        server = api.device_serve(args.host, args.port, args.tracker, args.key)
        where = f", registered with tracker {args.tracker} as {args.key!r}" if args.tracker \
            else ""
        print(f"onnxamc device agent on {args.host}:{server.port}{where}; Ctrl-C stops it",
              flush=True)
        return server
    return run_until_stopped(start, "agent's server")


def device_tracker(args) -> int:
    from onnxamc import api
    from onnxamc.cli.serving import run_until_stopped

    def start():
        tracker = api.device_tracker(args.host, args.port)
        print(f"tracker on {args.host}:{tracker.port}; Ctrl-C stops it", flush=True)
        return tracker
    return run_until_stopped(start, "tracker")


def _search_options(args) -> dict:
    return dict(latency=args.latency, max_drop=args.max_drop, trials=args.trials,
                timeout=args.timeout, storage=args.storage, study=args.study,
                actions=args.actions, threads=args.threads, eval_samples=args.eval_samples,
                calibration=args.calibration, calibration_samples=args.calibration_samples,
                runs=args.runs, seed=args.seed, agent=args.agent, objective=args.objective,
                sensitivity=args.sensitivity, predictor=args.predictor,
                warm_start=args.warm_start, warm_start_from=args.warm_start_from,
                target=args.target, pick=args.pick, progress=not args.no_progress,
                verify_runs=args.verify_runs, allow_emulated=args.allow_emulated,
                workers=args.workers, pruner=args.pruner, profile=args.profile,
                metric=args.metric, preprocess=args.preprocess, min_quality=args.min_quality,
                validation_split=args.validation_split, select_data=args.select_data,
                input_shapes=args.input_shape)


def _interrupted() -> int:
    print("onnxamc: search interrupted; the finished trials are stored: run the same "
          "command again to continue", file=sys.stderr)
    return 130


def _print_search(outcome) -> bool:
    if outcome.policy is None:
        r = outcome.result
        print(f"study {outcome.study_name!r} in {outcome.storage}: {len(r.study.trials)} "
              f"trials ({r.new_trials} new)")
        print("no trial finished; nothing written", file=sys.stderr)
        return False
    print("\n".join(tables.search_summary(outcome)))
    if outcome.compressed.emulated:
        print(tables.EMULATED_NOTE.format(outcome.compressed.emulated), file=sys.stderr)
    if outcome.profile:
        print(f"\nwhere a trial's time went (this process's trials):\n{outcome.profile}")
    return True
