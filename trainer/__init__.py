from trainer.trainer import Trainer, build_lr_scheduler, evaluate, train_one_epoch
