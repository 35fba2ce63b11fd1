from trainer.loops import evaluate, train_one_epoch
from trainer.schedulers import build_lr_scheduler
from trainer.trainer import Trainer
