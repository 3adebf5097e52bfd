"""Errors a user can act on: each carries one line that names the problem.

The CLI prints the message alone (no traceback); the Python API raises these so a
deployment pipeline can catch `OnnxAmcError` in one place. Results that are written
but may disappoint come with an `OnnxAmcWarning` (Python's warnings; one line in the CLI).
"""

import warnings


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class OnnxAmcError(Exception):
    """Base class: the message is one line meant for the user."""


class ModelError(OnnxAmcError):
    """The ONNX file cannot be read, is invalid, or uses something we do not handle."""


class DataError(OnnxAmcError):
    """Data does not exist or does not fit the model's inputs."""


class PolicyError(OnnxAmcError):
    """A policy is malformed or does not fit the model."""


class SearchError(OnnxAmcError):
    """A search cannot start or continue (bad storage, study, objective)."""


class EvaluationError(OnnxAmcError):
    """A compressed candidate could not be built or run; the search records it as failed."""


class MetricError(EvaluationError):
    """A quality metric cannot be made or a user's metric function failed; the message
    names the function. On a candidate the trial fails (as any EvaluationError)."""


class TargetError(OnnxAmcError):
    """A target file is missing or malformed, or asks for what this machine lacks."""


class UnsupportedOnTargetError(OnnxAmcError):
    """The model uses something the target's runtime cannot run (e.g. int4 QDQ on TVM).

    The search treats such a candidate as infeasible instead of failing the trial."""


class DeviceUnreachableError(OnnxAmcError):
    """A remote device (or its tracker) did not answer within the timeout."""


class PassError(OnnxAmcError):
    """A compression pass failed on one node; the message names the layer, op and rule."""


class CheckError(OnnxAmcError):
    """A compressed model failed the check every result passes (checker, onnxruntime,
    output shapes, identical outputs for a policy that changes nothing)."""


class OnnxAmcWarning(UserWarning):
    """A result that is written but may not be what the user wanted (a policy slower
    than the original, a pick rule no policy meets): one line, on stderr in the CLI."""


def warn(message: str) -> None:
    warnings.warn(message, OnnxAmcWarning, stacklevel=3)
