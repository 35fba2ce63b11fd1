from logger.logger import attach_run_log, get_logger, setup_logging
from logger.visualization import TensorboardWriter
