"""The root cause of a failed bundle run as the last thing printed, and an exit that cannot abort.

MONAI's config parser wraps any exception raised while it evaluates an expression or instantiates a
component in ``RuntimeError("Failed to evaluate ...")``, so the traceback of ``python -m monai.bundle run``
ends with that wrapper and the message naming the offending config key sits dozens of lines higher.

A failed run must also end with its exit status, not with ``SIGABRT``. An exception raised while a
``CacheDataset`` fills its cache leaves the cache's daemon worker threads running transforms inside torch
C++ code. At interpreter shutdown Python ends such a thread with ``pthread_exit`` as soon as it takes the
GIL back; the forced unwind through torch's ``noexcept`` frames calls ``std::terminate`` ("terminate called
without an active exception", exit status 134). The hook therefore ends a failed non-interactive run with
``os._exit`` once the traceback and the root cause are printed and the streams and logging are flushed.
"""

from __future__ import annotations

import logging
import os
import sys
from types import TracebackType

__all__ = ["report_root_cause", "root_cause"]

FAILED = 1
"""Exit status of a failed run (that of an uncaught exception); 130 after an interrupt."""


def root_cause(err: BaseException) -> BaseException:
    """The innermost ``__cause__`` of ``err`` (``err`` itself when it has none): what a config expression
    raised, under MONAI's ``RuntimeError("Failed to evaluate ...")``."""
    while err.__cause__ is not None:
        err = err.__cause__
    return err


def _exit(status: int) -> None:
    """Flush what Python would flush at shutdown, then leave without finalizing the interpreter."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(status)


def _hook(previous):
    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        previous(exc_type, exc, tb)
        root = root_cause(exc)
        if root is not exc:
            print(f"\nBundle run failed: {type(root).__name__}: {root}", file=sys.stderr)
        if not (sys.flags.interactive or hasattr(sys, "ps1")):
            _exit(130 if issubclass(exc_type, KeyboardInterrupt) else FAILED)

    hook.reports_root_cause = True
    return hook


def report_root_cause() -> None:
    """Install a ``sys.excepthook`` that prints the innermost cause of an uncaught exception after the
    usual traceback and then exits with status 1 (130 after Ctrl-C) without finalizing the interpreter,
    so that worker threads still busy in torch code cannot turn the failure into an abort (see the module
    docstring); an interactive session is left running. Installed once, however often it is called. Meant
    as the first ``initialize`` expression of a bundle config: ``"$jcas_monai.engines.report_root_cause()"``."""
    if not getattr(sys.excepthook, "reports_root_cause", False):
        sys.excepthook = _hook(sys.excepthook)
