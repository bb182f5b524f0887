"""Reading and writing 2D images and label maps (PNG, JPEG, NIfTI) outside the MONAI transform chain.

The bundle itself loads data with MONAI's ``LoadImaged``; these helpers serve the command-line tools
(dataset generation, label noise, integrity checks) that read a label, change it and write it back in
the same format. Arrays are returned as stored: ``(H, W)`` or ``(H, W, C)`` for PNG/JPEG, the data
array for NIfTI (trailing singleton axes dropped).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

IGNORE_INDEX = 255
"""Label value for pixels that carry no supervision."""

NIFTI_SUFFIXES = (".nii", ".nii.gz")

PNG_COMPRESS_LEVEL = 1
"""zlib level of the PNGs this package writes: lossless at any level, and level 1 writes several times
faster than PIL's default of 6 for files a little larger."""


def is_nifti(path: str | Path) -> bool:
    """Whether ``path`` names a NIfTI file (``.nii`` or ``.nii.gz``)."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def file_stem(path: str | Path) -> str:
    """File name without its extension, ``.nii.gz`` counting as one: ``a/b.nii.gz`` -> ``b``."""
    name = Path(path).name
    return next((name[: -len(s)] for s in NIFTI_SUFFIXES if name.lower().endswith(s)), Path(name).stem)


def read_array(path: str | Path) -> np.ndarray:
    """Read a 2D image or label as a numpy array.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file cannot be decoded, naming the path.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        if is_nifti(path):
            data = np.asarray(nib.load(str(path)).dataobj)
            while data.ndim > 2 and data.shape[-1] == 1:
                data = data[..., 0]
            return data
        with Image.open(path) as img:
            return np.asarray(img)
    except Exception as err:  # any decoder failure is reported with the file that caused it
        raise ValueError(f"{path}: cannot be read as an image ({err})") from err


def read_label(path: str | Path) -> np.ndarray:
    """Read a label map of class indices as a ``(H, W)`` uint8 array (255 = ignore).

    Raises:
        ValueError: the file is not a single-channel map of integers in 0..255, naming the path.
    """
    data = read_array(path)
    if data.ndim != 2:
        raise ValueError(f"{path}: a label must be a single-channel 2D map of class indices, got shape {data.shape}")
    if np.issubdtype(data.dtype, np.floating) and (not np.all(np.isfinite(data)) or np.any(data != np.round(data))):
        raise ValueError(f"{path}: label values must be whole class indices")
    if data.min() < 0 or data.max() > IGNORE_INDEX:
        raise ValueError(f"{path}: label values must lie in 0..255, found {data.min()}..{data.max()}")
    return data.astype(np.uint8)


def write_label(path: str | Path, label: np.ndarray, like: str | Path | None = None) -> None:
    """Write a ``(H, W)`` label map; NIfTI when ``path`` ends in .nii/.nii.gz, otherwise PNG.

    Args:
        path: destination file; parent folders are created.
        label: class indices, values in 0..255.
        like: for NIfTI output, a NIfTI file whose affine and header are reused.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    label = np.asarray(label, dtype=np.uint8)
    if is_nifti(path):
        affine, header = np.eye(4), None
        if like is not None and is_nifti(like):
            ref = nib.load(str(like))
            affine, header = ref.affine, ref.header.copy()
            label = label.reshape(ref.shape) if int(np.prod(ref.shape)) == label.size else label
        img = nib.Nifti1Image(label, affine, header)
        img.set_data_dtype(np.uint8)
        nib.save(img, str(path))
    else:
        Image.fromarray(label).save(path, compress_level=PNG_COMPRESS_LEVEL)
