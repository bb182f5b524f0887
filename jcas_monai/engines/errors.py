"""The root cause of a failed bundle run as the last thing printed.

MONAI's config parser wraps any exception raised while it evaluates an expression or instantiates a
component in ``RuntimeError("Failed to evaluate ...")``, so the traceback of ``python -m monai.bundle run``
ends with that wrapper and the message naming the offending config key sits dozens of lines higher.
"""

from __future__ import annotations

import sys
from types import TracebackType

__all__ = ["report_root_cause"]


def _root_cause(err: BaseException) -> BaseException:
    while err.__cause__ is not None:
        err = err.__cause__
    return err


def _hook(previous):
    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        previous(exc_type, exc, tb)
        root = _root_cause(exc)
        if root is not exc:
            print(f"\nBundle run failed: {type(root).__name__}: {root}", file=sys.stderr)

    hook.reports_root_cause = True
    return hook


def report_root_cause() -> None:
    """Install a ``sys.excepthook`` that prints the innermost cause of an uncaught exception after the
    usual traceback (once, however often it is called). Meant as the first ``initialize`` expression of a
    bundle config: ``"$jcas_monai.engines.report_root_cause()"``."""
    if not getattr(sys.excepthook, "reports_root_cause", False):
        sys.excepthook = _hook(sys.excepthook)
