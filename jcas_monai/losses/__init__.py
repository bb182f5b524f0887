from .affinity_loss import AffinityBCELoss
from .bands import band_fractions, border_bands, check_radii, empirical_band_ntm
from .branch_loss import BranchLoss
from .calc import CALCLoss
from .class_loss import ForwardCorrectedCELoss
from .jcas_loss import JCASLoss
from .ntm import (
    NoiseTransitionMatrix,
    class_frequencies,
    class_to_affinity_ntm,
    empirical_affinity_ntm,
    empirical_class_ntm,
    load_matrix,
    pair_counts,
)
from .robust_losses import GCELoss, NRDiceLoss, SCELoss, SparseRegLoss, TLoss
from .volmin import VolMinLoss
