from utils.errors import CheckpointError, ConfigError, DataError, DistributedError, SpecError, UserError
from utils.util import MetricTracker, resolve_device, seed_everything
