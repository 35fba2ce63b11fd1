from utils.errors import CheckpointError, ConfigError, DataError, DistributedError, SpecError, TrainingError, UserError
from utils.util import MetricTracker, resolve_device, seed_everything
