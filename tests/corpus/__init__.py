"""Issue 15's corpus of mistaken and hostile inputs: inputs.py builds them, cases.py
says what onnxamc should do with each, runner.py runs one as a user would and sorts the
outcome; `python tests/corpus` prints the counts per class (see __main__.py)."""
