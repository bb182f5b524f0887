from .affinity import AffinityLabel, AffinityLabeld
from .annotation_noise import (
    AffineNoise,
    AffineNoised,
    DilationErosionNoise,
    DilationErosionNoised,
    PolygonNoise,
    PolygonNoised,
)
from .format import As2D, As2Dd
from .items import ReplaceItemsd
from .noise import (
    AsymmetricNoise,
    AsymmetricNoised,
    EllipseNoise,
    EllipseNoised,
    SymmetricNoise,
    SymmetricNoised,
    label_noise_transforms,
    noise_transform,
)
from .save import SaveLabelMap, SaveLabelMapd
