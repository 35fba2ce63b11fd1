from trainer.schedulers import build_lr_scheduler
from trainer.trainer import Trainer, evaluate, train_one_epoch
