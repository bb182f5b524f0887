from .format import As2D, As2Dd
from .noise import (
    AsymmetricNoise,
    AsymmetricNoised,
    EllipseNoise,
    EllipseNoised,
    SymmetricNoise,
    SymmetricNoised,
    noise_transform,
)
from .save import SaveLabelMap, SaveLabelMapd
