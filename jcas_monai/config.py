"""Config values as the bundle's command line gives them.

``python -m monai.bundle run ... --key value`` reads values with Python Fire, which turns ``False`` and
``True`` into booleans but leaves ``false`` and ``true`` (the JSON spelling, the one the config files use)
as strings, and every non-empty string is true. ``--ntm_learn false`` then learned the matrices, and
``--synthetic_if_missing false`` generated a dataset. The config reads its switches through :func:`flag`.
"""

from __future__ import annotations

__all__ = ["flag"]

_WORDS = {"true": True, "false": False}


def flag(value: bool | str, key: str) -> bool:
    """``value`` of the config switch ``key`` as a bool: a bool, or ``true``/``false`` in any case.

    Raises:
        ValueError: any other value, naming ``key``.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _WORDS:
        return _WORDS[value.strip().lower()]
    raise ValueError(f"{key} must be true or false, got {value!r}")
