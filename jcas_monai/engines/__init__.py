from .checkpoint import (
    SELECTION_RULES,
    BestModelSaver,
    TrainingCheckpoint,
    atomic_save,
    latest_checkpoints,
    selection_rule,
)
from .coteaching import CoTeachingLoss, CoTeachingNetwork, ForgetRateSchedule
from .distributed import AllReduceGradients, BroadcastFromRankZero, get_rank, handlers_for_rank
from .errors import report_root_cause, root_cause
from .guards import NonFiniteLossError, NonFiniteLossGuard
from .handlers import MetricsReport
from .matrix_optimizer import MatrixOptimizerStep
from .metrics import ProtocolMetric, protocol_metrics, protocol_scores
from .ntm_report import NTMReport, empirical_ntms, given_matrix
from .prepare_batch import JCASPrepareBatch
from .stages import JCASStages, StagePolyLR
from .warm_start import WARM_START_METHODS, estimate_ntms
