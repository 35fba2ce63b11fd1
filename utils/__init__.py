from utils.errors import CheckpointError, ConfigError, DataError, DistributedError, SpecError, TrainingError, UserError
from utils.runtime import resolve_device, seed_everything
