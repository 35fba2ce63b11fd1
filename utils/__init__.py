from utils.errors import CheckpointError, ConfigError, DataError, DistributedError, SpecError, TrainingError, UserError
from utils.metric_tracker import MetricTracker
from utils.runtime import resolve_device, seed_everything
