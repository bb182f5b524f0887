"""Datalist-item helpers: which file of an item a pipeline trains on."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.utils import ensure_tuple

__all__ = ["ReplaceItemsd"]


def _copy(value: Any) -> Any:
    return value.clone() if hasattr(value, "clone") else value


class ReplaceItemsd(MapTransform):
    """Replace the items ``names`` with copies of the items ``keys``, which MONAI's ``CopyItemsd`` refuses
    to do when ``names`` already exist.

    The upper-bound overlay trains on ``clean_label`` where a datalist has one (the datalists
    ``python -m jcas_monai.noise`` writes carry the noisy file as ``label`` and the clean one as
    ``clean_label``): ``ReplaceItemsd(keys="clean_label", names="label", allow_missing_keys=True)``.

    Args:
        keys: items to copy.
        names: items to replace, one per key.
        allow_missing_keys: leave ``names`` unchanged where a key is missing instead of raising.

    Raises:
        ValueError: ``names`` and ``keys`` differ in length.
    """

    def __init__(self, keys: KeysCollection, names: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.names = ensure_tuple(names)
        if len(self.names) != len(self.keys):
            raise ValueError(f"ReplaceItemsd: {len(self.keys)} keys but {len(self.names)} names")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, name in self.key_iterator(d, self.names):
            d[name] = _copy(d[key])
        return d
