"""Workflows: what the commands do, step by step, over the parts (graph, actions,
passes, runtime, search, recover). api.py is a thin facade over these modules.

- run.py          one model and its settings: data, calibration, target, evaluator, apply
- searching.py    search and confirm: the evaluator the search calls, re-measurement, output
- compressing.py  convert and compress: search or given policy, recovery, verify, report
- recovering.py   recovery by training (fine-tune, distillation, QAT) and its settings search
- benching.py     bench and sensitivity
- reporting.py    the report of a stored study
- devices.py      targets this machine can measure on, the device agent, the tracker
"""
