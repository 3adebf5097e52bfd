"""The corpus: every row of issue 15's table and the cases added around them, one per
mistaken or hostile input, through the commands a user types.

`owner` marks the issue whose work fixed a row (13: data; 14: search and storage;
board: the device agent).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from corpus.runner import Case

DATA = "--data {D} --calibration {D}"
SEARCH = f"{DATA} --trials 3 --runs 3 --no-progress"
APPLY = "--calibration {D} -o {cwd}/out.onnx"
QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "ConvInteger",
                 "MatMulInteger", "DynamicQuantizeLinear", "QGemm", "MatMulNBits"}


# --- what an accepted input must give --------------------------------------------------
def _runs(path: Path):
    import numpy as np
    import onnx
    import onnxruntime as ort

    assert path.is_file(), f"{path.name} was not written"
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((2, 1, 8, 8), dtype=np.float32)
    (y,) = session.run(None, {session.get_inputs()[0].name: x})
    assert y.shape == (2, 10) and np.isfinite(y).all(), "outputs are not finite class scores"
    return model


def quantized(name: str = "out.onnx", layers: int = 1):
    def check(cwd: Path, outcome) -> None:
        ops = [n.op_type for n in _runs(cwd / name).graph.node]
        count = sum(op in QUANTIZED_OPS for op in ops)
        assert count >= layers, f"no layer is quantized ({sorted(set(ops))})"
    return check


def repaired(name: str):
    """One warning line saying the journal was repaired, and the search's model written."""
    def check(cwd: Path, outcome) -> None:
        lines = outcome.stderr.strip().splitlines()
        assert len(lines) == 1 and "repaired journal" in lines[0], lines
        _runs(cwd / name)
    return check


def valid(name: str = "out.onnx"):
    return lambda cwd, outcome: _runs(cwd / name)


def warns(text: str, name: str):
    """One warning line on stderr saying `text`, and the model written all the same."""
    def check(cwd: Path, outcome) -> None:
        lines = outcome.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("onnxamc: warning: ") \
            and text in lines[0], f"expected one warning line saying {text!r}: {lines}"
        _runs(cwd / name)
    return check


def stopped(signal: str):
    """A server stopped by a signal: exit 0, its last line says so (TVM logs before it)."""
    def check(cwd: Path, outcome) -> None:
        lines = outcome.stderr.strip().splitlines()
        assert lines and lines[-1].endswith(f"stopped ({signal})"), lines
        assert "no authentication" in outcome.stderr  # a host beyond loopback is warned of
    return check


def prints(text: str):
    def check(cwd: Path, outcome) -> None:
        assert text in outcome.stdout, f"stdout lacks {text!r}"
    return check


# --- what a case makes before it runs --------------------------------------------------
def folder(name: str, mode: int | None = None):
    def prepare(cwd: Path, inputs: dict[str, str]) -> None:
        (cwd / name).mkdir()
        if mode is not None:
            (cwd / name).chmod(mode)
    return prepare


def file(name: str):
    return lambda cwd, inputs: (cwd / name).write_text("x")


def copy(key: str, name: str):
    """Copy a shared input into the case's folder (a storage the case may write)."""
    return lambda cwd, inputs: shutil.copy(inputs[key], cwd / name)


def torn_journal(command: str):
    """The journal of a real study of `command` (one trial), its last line then torn as
    a crash while appending leaves it: the search repairs it and continues."""
    def prepare(cwd: Path, inputs: dict) -> None:
        import shlex

        from onnxamc import cli

        argv = shlex.split(command.format(cwd=cwd, **inputs).replace("--trials 3", "--trials 1"))
        assert cli.main(argv) == 0, "the study to tear was not made"
        (cwd / "s.onnx").unlink()
        (cwd / "s.policy.json").unlink()
        with open(cwd / "torn.journal", "ab") as f:
            f.write(b'{"op_code": 4, "worker_id": "a1b2", "study_id": 0, "dat')
    return prepare


def _models() -> list[Case]:
    cases = []
    bad_models = [("missing", "missing.onnx", "does not exist"), ("directory", "{cwd}", "directory"),
                  ("empty-file", "{EMPTY}", ""), ("truncated", "{TRUNC}", ""),
                  ("text-file", "{TEXT}", ""), ("npz-as-model", "{NPZ_AS_MODEL}", ""),
                  ("dangling-input", "{BROKEN}", ""), ("unknown-standard-op", "{UNKNOWN_OP}",
                                                        "FancyRelu"),
                  ("missing-external-data", "{EXTDATA}", "")]
    for label, model, match in bad_models:
        cases.append(Case(f"inspect-{label}", f"inspect {model}", match=match))
    for label, model in (("ir-version-14", "{IR14}"), ("opset-27", "{OPSET27}"),
                         ("custom-op", "{CUSTOM}")):  # reading them is fine, running is not
        cases.append(Case(f"inspect-{label}", f"inspect {model}", "either"))
    cases += [
        Case("inspect-opset-7", "inspect {M7}", "ok", check=prints("conv1")),
        Case("inspect-no-layers", "inspect {NOLAYERS}", "ok"),
        Case("apply-custom-op", f"apply {{CUSTOM}} --uniform bits=8 {APPLY}",
             match="com.example:FancyOp"),
        Case("bench-custom-op", "bench {CUSTOM} --data {D} --runs 3", match="com.example:FancyOp"),
        Case("search-custom-op", f"search {{CUSTOM}} {SEARCH} -o {{cwd}}/s.onnx",
             match="com.example:FancyOp"),
        Case("apply-opset-7-int8", f"apply {{M7}} --uniform bits=8 --no-latency-guard {APPLY}",
             "ok",
             check=quantized(layers=2)),
        Case("search-opset-7", f"search {{M7}} {SEARCH} --actions quant -o {{cwd}}/s.onnx",
             "ok", check=valid("s.onnx")),
        Case("bench-ir-version-14", "bench {IR14} --data {D} --runs 3", match="IR version 14"),
        Case("sensitivity-ir-version-14", "sensitivity {IR14} --data {D} --calibration {D}",
             match="IR version 14"),
        Case("apply-ir-version-14", f"apply {{IR14}} --uniform bits=8 {APPLY}",
             match="IR version 14"),
        Case("sensitivity-custom-op", "sensitivity {CUSTOM} --data {D} --calibration {D}",
             match="com.example:FancyOp"),
        Case("bench-opset-27", "bench {OPSET27} --data {D} --runs 3", match="opset 27"),
        Case("bench-second-model-truncated", "bench {M} {TRUNC} --data {D} --runs 3"),
        Case("apply-no-layers", f"apply {{NOLAYERS}} --uniform bits=8 {APPLY}",
             match="no layer"),
    ]
    return cases


def _data() -> list[Case]:
    cases = []
    for label, data, owner in [("empty-array", "{D_EMPTY}", "13"), ("nan", "{D_NAN}", "13"),
                               ("inf", "{D_INF}", "13"), ("labels-too-big", "{L_BIG}", "13"),
                               ("labels-negative", "{L_NEG}", "13"),
                               ("labels-nan", "{L_NAN}", "13"),
                               ("wrong-names", "{D_WRONGNAME}", None),
                               ("wrong-shape", "{D_WRONGSHAPE}", None),
                               ("strings", "{D_STR}", None), ("pickled-objects", "{D_OBJ}", None),
                               ("not-a-zip", "{D_NOTZIP}", None),
                               ("count-mismatch", "{D_MISMATCH}", None),
                               ("unknown-name", "imagenet", None),
                               ("random-not-a-count", "random:abc", None),
                               ("random-zero", "random:0", "13")]:
        cases.append(Case(f"bench-data-{label}", f"bench {{M}} --data {data} --runs 3",
                          owner=owner))
    cases += [
        Case("bench-eval-samples-0", "bench {M} --data {D} --runs 3 --eval-samples 0"),
        Case("bench-eval-samples-negative", "bench {M} --data {D} --eval-samples -5"),
        Case("apply-calibration-nan", "apply {M} --uniform bits=8 --calibration {D_NAN} "
             "-o {cwd}/out.onnx", owner="13"),
        Case("apply-calibration-inf", "apply {M} --uniform bits=8 --calibration {D_INF} "
             "-o {cwd}/out.onnx", owner="13"),
        Case("apply-calibration-empty", "apply {M} --uniform bits=8 --calibration "
             "{D_EMPTY} -o {cwd}/out.onnx", owner="13"),
        Case("apply-calibration-samples-0", f"apply {{M}} --uniform bits=8 {APPLY} "
             "--calibration-samples 0"),
        Case("apply-calibration-missing", "apply {M} --uniform bits=8 --calibration nope.npz "
             "-o {cwd}/out.onnx", match="nope.npz"),
        Case("apply-calibration-wrong-shape", "apply {M} --uniform bits=8 --calibration "
             "{D_WRONGSHAPE} -o {cwd}/out.onnx"),
        Case("search-labels-too-big", "search {M} --data {L_BIG} --calibration {D} "
             "--trials 3 --runs 3 --no-progress -o {cwd}/s.onnx", owner="13"),
        Case("search-data-nan", "search {M} --data {D_NAN} --calibration {D} "
             "--trials 3 --runs 3 --no-progress -o {cwd}/s.onnx", owner="13"),
        Case("search-calibration-samples-0", f"search {{M}} {SEARCH} --calibration-samples 0 "
             "-o {cwd}/s.onnx"),
        Case("search-eval-samples-0", f"search {{M}} {SEARCH} --eval-samples 0 -o {{cwd}}/s.onnx"),
    ]
    return cases


def _policies() -> list[Case]:
    cases = [Case(f"apply-policy-{label}", f"apply {{M}} --policy {policy} {APPLY}", match=match)
             for label, policy, match in [
                 ("missing", "nope.json", "nope.json"), ("misspelled-layer", "{P_MISSPELL}",
                                                         "did you mean conv1"),
                 ("not-a-layer", "{P_NOTLAYER}", "relu1"), ("other-model", "{P_FINGER}",
                                                            "another model"),
                 ("unknown-field", "{P_UNKFIELD}", "did you mean 'bits'"),
                 ("bits-9", "{P_BITS9}", "bits"), ("bits-string", "{P_BITS_STR}", "bits"),
                 ("bits-8.5", "{P_BITS85}", "bits"), ("keep-0", "{P_KEEP0}", "keep"),
                 ("keep-nan", "{P_KEEP_NAN}", "keep"), ("sparsity-1", "{P_SPARSITY1}", "sparsity"),
                 ("layers-list", "{P_LAYERS_LIST}", "layers"), ("old-schema", "{P_SCHEMA}", "schema"),
                 ("array", "{P_ARRAY}", "object"), ("not-json", "{P_NOTJSON}", "JSON"),
                 ("binary", "{P_BINARY}", ""), ("95-MB", "{P_BIG}", "MB")]]
    cases += [
        Case("apply-policy-bits-8.0", f"apply {{M}} --policy {{P_BITS80}} {APPLY}", "ok",
             check=quantized(layers=2)),
        Case("apply-policy-dynamic-and-fp16", f"apply {{M}} --policy {{P_DYN_FP16}} {APPLY}",
             "either", check=valid()),
        Case("apply-policy-dynamic-and-per-block", f"apply {{M}} --policy {{P_DYN_BLOCK}} "
             f"{APPLY}", "either", check=valid()),
        Case("compress-policy-slower-warns", f"compress {{M}} --policy {{P_SLOW}} {DATA} "
             "--no-report --runs 20 -o {cwd}/c.onnx", "ok", check=warns("slower", "c.onnx")),
        Case("apply-uniform-unknown-field", f"apply {{M}} --uniform bitz=8 {APPLY}",
             match="did you mean bits"),
        Case("apply-uniform-not-a-number", f"apply {{M}} --uniform keep=abc {APPLY}", match="keep"),
        Case("apply-uniform-empty", f"apply {{M}} --uniform , {APPLY}", match="empty"),
        Case("apply-uniform-keep-0", f"apply {{M}} --uniform keep=0 {APPLY}", match="keep"),
        Case("apply-channel-multiple-0", f"apply {{M}} --uniform keep=0.5 {APPLY} "
             "--channel-multiple 0", match="channel-multiple"),
        Case("search-warm-start-missing", f"search {{M}} {SEARCH} --warm-start nope.json "
             "-o {cwd}/s.onnx", match="nope.json", owner="14"),
        Case("search-sensitivity-missing", f"search {{M}} {SEARCH} --sensitivity nope.json "
             "-o {cwd}/s.onnx", match="nope.json", owner="14"),
        Case("compress-policy-other-model", f"compress {{M}} --policy {{P_FINGER}} {DATA} "
             "--no-report -o {cwd}/c.onnx", match="another model"),
        Case("sensitivity-unknown-action", "sensitivity {M} --data {D} --actions int3",
             match="int3"),
        Case("sensitivity-bad-action-fields", "sensitivity {M} --data {D} --action bits=9",
             match="bits"),
        Case("sensitivity-misspelled-layer", "sensitivity {M} --data {D} --calibration {D} "
             "--layers conv_1", match="did you mean conv1"),
    ]
    return cases


def _paths() -> list[Case]:
    quant = "--uniform bits=8 --calibration {D}"
    return [
        Case("apply-output-proc", f"apply {{M}} {quant} -o /proc/onnxamc-out.onnx",
             match="/proc/onnxamc-out.onnx"),
        Case("apply-output-directory", f"apply {{M}} {quant} -o {{cwd}}/adir",
             match="directory", prepare=folder("adir")),
        Case("apply-output-read-only", f"apply {{M}} {quant} -o {{cwd}}/ro/out.onnx",
             match="ro/out.onnx", prepare=folder("ro", 0o555), root_ok=False),
        Case("apply-output-under-a-file", f"apply {{M}} {quant} -o {{cwd}}/afile/out.onnx",
             match="afile", prepare=file("afile")),
        Case("apply-save-policy-proc", f"apply {{M}} {quant} -o {{cwd}}/out.onnx "
             "--save-policy /proc/p.json", match="/proc/p.json"),
        Case("search-output-proc", f"search {{M}} {SEARCH} -o /proc/s.onnx", match="/proc/s.onnx"),
        Case("search-output-directory", f"search {{M}} {SEARCH} -o {{cwd}}/adir",
             match="directory", prepare=folder("adir")),
        Case("compress-output-proc", f"compress {{M}} {SEARCH} --no-report -o /proc/c.onnx",
             match="/proc/c.onnx"),
        Case("compress-report-dir-proc", f"compress {{M}} {SEARCH} --report-dir /proc/rep "
             "-o {cwd}/c.onnx", match="/proc/rep"),
        Case("compress-report-dir-a-file", f"compress {{M}} {SEARCH} --report-dir {{cwd}}/afile "
             "-o {cwd}/c.onnx", match="afile", prepare=file("afile")),
        Case("sensitivity-output-proc", "sensitivity {M} --data {D} --calibration {D} "
             "-o /proc/sens.json", match="/proc/sens.json"),
        Case("sensitivity-output-directory", "sensitivity {M} --data {D} --calibration {D} "
             "-o {cwd}/adir", match="directory", prepare=folder("adir")),
        Case("report-output-proc", "report --storage nope.journal -o /proc/rep",
             match="/proc/rep"),
        Case("report-output-a-file", "report --storage nope.journal -o {cwd}/afile",
             match="afile", prepare=file("afile")),
        Case("bench-layer-table-proc", "bench {M} --data {D} --runs 3 --layer-table "
             "/proc/lt.json", match="/proc/lt.json"),
        Case("export-output-proc", "export nosuchpkg.nets:build --input-shape 1,1,8,8 "
             "-o /proc/e.onnx", match="/proc/e.onnx"),
    ]


def _numbers() -> list[Case]:
    bench, search = "bench {M} --data {D}", f"search {{M}} {SEARCH} -o {{cwd}}/s.onnx"
    compress = f"compress {{M}} {SEARCH} --no-report -o {{cwd}}/c.onnx"
    rows = [("bench-runs-0", f"{bench} --runs 0", "runs"),
            ("bench-runs-negative", f"{bench} --runs -3", "runs"),
            ("bench-threads-0", f"{bench} --runs 3 --threads 0", "threads"),
            ("bench-fgsm-negative", f"{bench} --runs 3 --fgsm -0.1", "fgsm"),
            ("bench-fgsm-nan", f"{bench} --runs 3 --fgsm nan", "fgsm"),
            ("search-runs-0", f"{search} --runs 0", "runs"),
            ("search-trials-0", f"{search} --trials 0", "trials"),
            ("search-trials-negative", f"{search} --trials -4", "trials"),
            ("search-timeout-0", f"{search} --timeout 0", "timeout"),
            ("search-timeout-nan", f"{search} --timeout nan", "timeout"),
            ("search-latency-negative", f"{search} --latency -1", "latency"),
            ("search-latency-nan", f"{search} --latency nan", "latency"),
            ("search-latency-inf", f"{search} --latency inf", "latency"),
            ("search-max-drop-negative", f"{search} --max-drop -0.1", "drop"),
            ("search-max-drop-nan", f"{search} --max-drop nan", "drop"),
            ("search-seed-negative", f"{search} --seed -1", "seed"),
            ("search-threads-0", f"{search} --threads 0", "threads"),
            ("search-agent-unknown", f"{search} --agent sgd", "sgd"),
            ("search-objective-unknown", f"{search} --objective fastest", "fastest"),
            ("search-objective-weighted-text", f"{search} --objective weighted:abc", "weighted"),
            ("search-pick-unknown", f"{search} --objective pareto --pick fastest", "fastest"),
            ("search-actions-unknown", f"{search} --actions squash", "squash"),
            ("search-actions-bad-range", f"{search} --actions sparsity=2:3", "sparsity"),
            ("search-trials-not-a-number", f"{search} --trials many", "trials"),
            ("compress-epochs-negative", f"{compress} --epochs -1", "epochs"),
            ("compress-epochs-0", f"{compress} --epochs 0", "epochs"),
            ("compress-epochs-nan", f"{compress} --epochs nan", "epochs"),
            ("compress-lr-0", f"{compress} --lr 0", "lr"),
            ("compress-lr-text", f"{compress} --lr fast", "lr"),
            ("compress-distill-2", f"{compress} --distill 2", "distill"),
            ("compress-feature-distill-negative", f"{compress} --feature-distill -1",
             "feature-distill"),
            ("compress-distill-trials-negative", f"{compress} --distill-trials -1 "
             "--train-data {D}", "distill-trials"),
            ("compress-distill-trials-without-train-data", f"{compress} --distill-trials 2",
             "train"),
            ("compress-trial-steps-0", f"{compress} --trial-steps 0", "trial-steps"),
            ("compress-train-seconds-0", f"{compress} --train-seconds 0", "train-seconds"),
            ("sensitivity-eval-samples-0", "sensitivity {M} --data {D} --eval-samples 0",
             "eval-samples"),
            ("sensitivity-threads-0", "sensitivity {M} --data {D} --threads 0", "threads"),
            ("device-serve-port-negative", "device serve --port -1", "port"),
            ("device-tracker-port-too-big", "device tracker --port 70000", "port")]
    return [Case(label, argv, match=match) for label, argv, match in rows]


def _sources() -> list[Case]:
    search = f"search {{M}} {SEARCH} -o {{cwd}}/s.onnx"
    compress = f"compress {{M}} {SEARCH} --no-report -o {{cwd}}/c.onnx"
    # a machine without the Debian package: the reader looks in an empty place
    no_fashion = ("import onnxamc.data as _d; from pathlib import Path as _P; "
                  "_d.FASHION_MNIST_DIR = _P('/nonexistent'); "
                  "_d.read_fashion_mnist_idx.__defaults__ = (False, _P('/nonexistent'))")
    return [
        Case("search-agent-gp-without-torch", f"{search} --agent gp", match="torch",
             missing=("torch",)),
        Case("search-agent-ddpg-without-torch", f"{search} --agent ddpg", match="torch",
             missing=("torch",)),
        Case("search-agent-rl-without-torch", f"{search} --agent rl", match="torch",
             missing=("torch",)),
        Case("search-agent-cmaes-without-cmaes", f"{search} --agent cmaes", match="cmaes",
             missing=("cmaes",)),
        Case("search-agent-qmc-without-scipy", f"{search} --agent qmc", match="scipy",
             missing=("scipy",)),
        Case("compress-report-without-matplotlib", f"compress {{M}} {SEARCH} -o {{cwd}}/c.onnx",
             match="matplotlib", missing=("matplotlib",)),
        Case("compress-train-without-torch", f"{compress} --train-data {{D}}", match="torch",
             missing=("torch",)),
        Case("bench-fgsm-without-torch", "bench {M} --data {D} --runs 3 --fgsm 0.1",
             match="torch", missing=("torch",)),
        Case("compress-train-data-fashion-mnist-not-installed",
             "compress --trials 3 --runs 3 --no-progress --no-report -o {cwd}/c.onnx "
             "--train-data fashion-mnist:train", match="dataset-fashion-mnist",
             prelude=no_fashion),
        Case("compress-verify-data-missing", f"{compress} --verify-data nope.npz",
             match="nope.npz"),
        Case("compress-train-data-missing", f"{compress} --train-data nope.npz", match="nope.npz"),
        Case("compress-unknown-entry-point", "compress nosuchpkg.nets:build --input-shape "
             "1,1,8,8 --no-report -o {cwd}/c.onnx", match="nosuchpkg"),
        Case("compress-entry-point-without-shape", "compress nosuchpkg.nets:build --no-report "
             "-o {cwd}/c.onnx", match="input-shape"),
        Case("export-bad-shape", "export nosuchpkg.nets:build --input-shape 1,x,8 "
             "-o {cwd}/e.onnx", match="1,x,8"),
        Case("bench-target-unknown", "bench {M} --data {D} --runs 3 --target nowhere",
             match="nowhere"),
        Case("bench-target-bad-toml", "bench {M} --data {D} --runs 3 --target {T_BAD}",
             match="bad.toml"),
        Case("bench-target-unknown-key", "bench {M} --data {D} --runs 3 --target "
             "{T_UNKNOWNKEY}", match="threadz"),
        Case("bench-target-cuda-here", "bench {M} --data {D} --runs 3 --target cuda-ort",
             match="CUDA"),
        Case("search-storage-json-file", f"{search} --storage {{cwd}}/study.json",
             prepare=copy("J_JSON", "study.json"), owner="14"),
        Case("search-storage-torn-journal", f"{search} --storage {{cwd}}/torn.journal --study s",
             "ok", prepare=torn_journal(f"{search} --storage {{cwd}}/torn.journal --study s"),
             check=repaired("s.onnx"), owner="14"),
        Case("search-pareto-on-single-objective-study", f"{search} --objective pareto "
             "--storage {cwd}/single.journal --study s",
             prepare=copy("J_SINGLE", "single.journal"), owner="14"),
        Case("search-storage-unreachable-postgres", f"{search} --storage "
             "postgresql://nobody@127.0.0.1:9/none", match="postgresql", timeout=90),
        Case("search-storage-sqlite-in-proc", f"{search} --storage sqlite:////proc/x.db",
             match="/proc/x.db"),
        Case("report-storage-missing", "report --storage {cwd}/nope.journal -o {cwd}/rep",
             match="nope.journal"),
        Case("report-storage-json-file", "report --storage {cwd}/study.json -o {cwd}/rep",
             prepare=copy("J_JSON", "study.json"), owner="14"),
    ]


def _bare_install() -> list[Case]:
    """What `pip install -e .` alone runs, as the README says: the extras' packages absent."""
    extras = ("torch", "scipy", "cmaes", "matplotlib", "sklearn", "onnx2fx", "tvm")
    return [
        Case("bare-inspect", "inspect {M}", "ok", check=prints("conv1"), missing=extras),
        Case("bare-apply", f"apply {{M}} --uniform keep=0.5,bits=8 {APPLY}", "ok",
             check=valid(), missing=extras),
        Case("bare-bench", "bench {M} --data {D} --runs 3", "ok", missing=extras),
        Case("bare-search-tpe", f"search {{M}} {SEARCH} -o {{cwd}}/s.onnx", "ok",
             check=valid("s.onnx"), missing=extras),
        Case("bare-search-nsga2", f"search {{M}} {SEARCH} --agent nsga2 -o {{cwd}}/s.onnx",
             "ok", check=valid("s.onnx"), missing=extras),
        Case("bare-compress-no-report", f"compress {{M}} {SEARCH} --no-report -o {{cwd}}/c.onnx",
             "ok", check=valid("c.onnx"), missing=extras),
    ]


def _interrupts() -> list[Case]:
    return [Case("search-ctrl-c", "search {M} --data {D} --calibration {D} --trials 200 "
                 "--runs 3 --no-progress -o {cwd}/s.onnx", match="interrupted",
                 interrupt_after="s.journal", timeout=180),
            Case("device-tracker-other-host-ctrl-c", "device tracker --host 127.0.0.2 "
                 "--port 9391", "ok", interrupt_after=20.0, timeout=120, owner="board",
                 check=stopped("SIGINT"))]


CASES: list[Case] = (_models() + _data() + _policies() + _paths() + _numbers() + _sources()
                     + _bare_install() + _interrupts())
