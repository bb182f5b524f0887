from .handlers import MetricsReport
from .metrics import ProtocolMetric, protocol_metrics, protocol_scores
from .prepare_batch import JCASPrepareBatch
from .checkpoint import ResumeFromLatest, latest_checkpoints
