"""Reading a decathlon-style datalist and rewriting its paths for another folder (noise CLI helpers)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from jcas_monai.data.io import IGNORE_INDEX, read_label

PATH_KEYS = ("image", "label", "clean_label")
"""Item keys holding file paths (a string, or a list of strings for multi-file images)."""

SPLITS = ("training", "validation", "test")
"""Standard split keys of a decathlon datalist."""


class DatalistError(ValueError):
    """The datalist is malformed; the message names the file and the item."""


def load_datalist(path: Path) -> dict[str, Any]:
    """The datalist JSON as a dictionary.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DatalistError: the file is not a JSON object, naming the path.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such datalist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise DatalistError(
            f"{path}: a datalist must be a JSON object with 'training', 'validation', ... lists"
        )
    return data


def split_items(data: dict[str, Any], split: str, path: Path) -> list[Any]:
    """The items of ``split``, checked to be a list.

    Raises:
        DatalistError: the split is missing or not a list, naming the datalist.
    """
    items = data.get(split)
    if not isinstance(items, list):
        raise DatalistError(f"{path}: split '{split}' is missing or is not a list")
    return items


def labelled_item(item: Any, keys: tuple[str, ...], split: str, index: int, path: Path) -> dict[str, Any]:
    """``item`` checked to be an object whose ``keys`` hold path strings.

    Raises:
        DatalistError: naming the datalist, the split, the item index and the missing key.
    """
    if not isinstance(item, dict):
        raise DatalistError(f"{path}: {split}[{index}] must be an object with {', '.join(keys)}")
    for key in keys:
        if not isinstance(item.get(key), str):
            raise DatalistError(f"{path}: {split}[{index}] has no '{key}' path")
    return item


def resolve(root: Path, value: str) -> Path:
    """``value`` as an absolute path: unchanged when absolute, else relative to ``root``."""
    path = Path(value)
    return path if path.is_absolute() else root / path


def relocate(item: Any, root: Path, out: Path) -> Any:
    """A copy of ``item`` whose paths, written relative to ``root``, are rewritten relative to ``out``."""

    def move(value: str) -> str:
        return Path(os.path.relpath(resolve(root, value), out)).as_posix()

    if isinstance(item, str):
        return move(item)
    new = dict(item)
    for key in PATH_KEYS:
        value = new.get(key)
        if isinstance(value, str):
            new[key] = move(value)
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            new[key] = [move(v) for v in value]
    return new


def class_names(data: dict[str, Any]) -> dict[int, str]:
    """The optional ``labels`` mapping of the datalist as ``{index: name}`` (empty when absent)."""
    labels = data.get("labels")
    if not isinstance(labels, dict):
        return {}
    return {int(k): str(v) for k, v in labels.items() if str(k).isdigit()}


def infer_num_classes(paths: list[Path]) -> int:
    """Largest label value over ``paths`` (ignore excluded) + 1, at least 2."""
    top = 0
    for path in paths:
        values = read_label(path)
        values = values[values != IGNORE_INDEX]
        if values.size:
            top = max(top, int(values.max()))
    return max(top + 1, 2)
