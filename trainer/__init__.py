from trainer.loops import evaluate, train_one_epoch
from trainer.trainer import Trainer
