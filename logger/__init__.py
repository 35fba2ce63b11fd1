from logger.logger import get_logger, setup_logging
from logger.visualization import TensorboardWriter
