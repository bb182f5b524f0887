"""Ignite handlers the JCAS workflows need beyond stock MONAI."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

from ignite.engine import Engine, Events

__all__ = ["MetricsReport"]


class MetricsReport:
    """Write the paper-protocol scores of an evaluation to JSON and print them as a table.

    Reads ``mean_dice``, ``mean_jac``, ``dice_<class>`` and ``jac_<class>`` from ``engine.state.metrics``
    (see :func:`~jcas_monai.engines.protocol_metrics`) when the engine completes and writes
    ``{"mean_dice", "mean_jac", "per_class": {name: {"dice", "jac"}}, "num_images"}`` (fractions in
    0..1; ``null`` for a class absent from every ground truth) to ``output_file``.

    Args:
        output_file: path of the JSON file; parent folders are created.
        class_names: all class names, background first.
    """

    def __init__(self, output_file: str | os.PathLike, class_names: Sequence[str]) -> None:
        self.output_file = Path(output_file)
        self.class_names = list(class_names)
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    @staticmethod
    def _num(value: object) -> float | None:
        value = float(value)
        return None if math.isnan(value) else value

    def __call__(self, engine: Engine) -> None:
        m = engine.state.metrics
        report = {
            "mean_dice": self._num(m["mean_dice"]),
            "mean_jac": self._num(m["mean_jac"]),
            "per_class": {
                name: {"dice": self._num(m[f"dice_{name}"]), "jac": self._num(m[f"jac_{name}"])}
                for name in self.class_names[1:]
            },
            "num_images": len(engine.data_loader.dataset) if hasattr(engine.data_loader, "dataset") else None,
        }
        self.output_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.output_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=2))
        os.replace(tmp, self.output_file)
        print(self.table(report))
        self.logger.info(f"metrics written to {self.output_file}")

    @staticmethod
    def table(report: dict) -> str:
        """Markdown table of a report in percent, three decimals (the paper's layout)."""

        def pct(v: float | None) -> str:
            return "-" if v is None else f"{100 * v:.3f}"

        rows = ["| class | Dice (%) | Jac (%) |", "|---|---|---|"]
        rows += [f"| {n} | {pct(s['dice'])} | {pct(s['jac'])} |" for n, s in report["per_class"].items()]
        rows.append(f"| **mean** | {pct(report['mean_dice'])} | {pct(report['mean_jac'])} |")
        return "\n".join(rows)
