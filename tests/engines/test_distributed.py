"""Rank-zero handler selection (the two-process run itself is in tests/bundle/test_multi_gpu.py)."""

from __future__ import annotations

from ignite.handlers import ProgressBar
from monai.handlers import LrScheduleHandler, StatsHandler, ValidationHandler

from jcas_monai.engines import distributed
from jcas_monai.engines.checkpoint import BestModelSaver


class _Stats(StatsHandler):
    """A subclass counts as its rank-zero-only base class."""


def _handlers():
    return [
        object.__new__(cls)
        for cls in (LrScheduleHandler, StatsHandler, _Stats, ValidationHandler, ProgressBar, BestModelSaver)
    ]


RANK_ZERO = (StatsHandler, ProgressBar, BestModelSaver)


def test_rank_zero_keeps_every_handler(monkeypatch):
    monkeypatch.setattr(distributed, "get_rank", lambda: 0)
    handlers = _handlers()
    assert distributed.handlers_for_rank(handlers, RANK_ZERO) == handlers


def test_other_ranks_keep_all_but_the_rank_zero_types(monkeypatch):
    monkeypatch.setattr(distributed, "get_rank", lambda: 1)
    kept = distributed.handlers_for_rank(_handlers(), RANK_ZERO)
    assert [type(h) for h in kept] == [LrScheduleHandler, ValidationHandler]


def test_without_process_group_this_is_rank_zero():
    assert distributed.get_rank() == 0
