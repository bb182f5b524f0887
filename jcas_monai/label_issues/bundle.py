"""The bundle's label-issue config, parsed in-process by the tools that drive it (folds, MONAI Label)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from monai.bundle import ConfigParser

__all__ = ["CONFIG_NAME", "label_issues_parser"]

CONFIG_NAME = "label_issues.json"
"""The label-issue config in the bundle's ``configs`` folder, merged over ``train.json``."""


def label_issues_parser(
    bundle_root: str | os.PathLike, configs: Sequence[str | os.PathLike], overrides: Mapping[str, object]
) -> ConfigParser:
    """A parser of ``configs`` (``train.json`` and its overlays), then ``<bundle_root>/configs/label_issues.json``,
    then ``overrides``, with ``bundle_root`` set: ``parser.get_parsed_content("label_issues#finder")``
    builds the finder as ``python -m monai.bundle run`` would."""
    parser = ConfigParser()
    parser.read_config([str(c) for c in configs] + [str(Path(bundle_root) / "configs" / CONFIG_NAME)])
    parser.update({"bundle_root": str(bundle_root), **overrides})
    return parser
