"""Training benchmark: what bounds an epoch, how fast the recipe learns, and how far it gets.

    python -m benchmarks.train_benchmark -c config.json --data_dir D --validation_split 5000 [--seeds 1 2 3]

For each seed it trains with the config's recipe through train.py's own code (train.build and
train: the same Trainer, epoch loop, precision and scheduler stepping) and prints, in
`key : value` lines: device, parameters, receptive field, the data loader's throughput alone
(one pass over the training loader, no model), the model's forward+backward throughput alone
(synthetic batches already on the device), seconds per epoch for training and for evaluation,
training images per second, the wall time (training + evaluation, from the first epoch) at which
validation accuracy first reached --target, and the final-epoch validation accuracy. With several
seeds, the mean and standard deviation of the final accuracy close the output. Nothing is kept:
the run's checkpoints go to a temporary folder, deleted at the end; no report, no TensorBoard.
"""

import copy
import statistics
import sys
import tempfile
import time

if not __package__:  # run as a file, the project's packages are not importable
    sys.exit("run it from the repository root as a module: python -m benchmarks.train_benchmark ...")

import torch

import model.metric as module_metric
from base.base_model import num_params
from checkpoint.saver import RunFiles
from checkpoint.schema import get_rng_state, set_rng_state
from config.overrides import add_override_flags, base_argparser
from config.parser import ConfigParser
from logger import setup_logging
from logger.format import format_log
from model.spec import empirical_receptive_field
from model.trace import receptive_field, trace
from train import build
from utils import UserError, resolve_device, seed_everything
from utils.cli import run_main


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def loader_throughput(loader):
    """Images per second of the training loader alone (augmentation in its workers)."""
    start, n = time.perf_counter(), 0
    for images, *_ in loader:
        n += len(images)
    return n / (time.perf_counter() - start)


def model_throughput(trainer, batch_size, steps=30):
    """Images per second of forward+backward+step on synthetic batches already on the device, in
    the Trainer's precision and memory format; the model and optimizer are restored afterwards."""
    model, device, optimizer = trainer.train_model, trainer.device, trainer.optimizer
    model.train()
    x = torch.randn(batch_size, 3, *trainer.data_loader.image_size, device=device)
    if trainer.precision.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, len(trainer.data_loader.classes), (batch_size,), device=device)
    weights, opt_state = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
    for i in range(steps + 5):
        if i == 5:
            sync(device)
            start = time.perf_counter()
        with trainer.precision.autocast():
            loss = trainer.criterion(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync(device)
    rate = steps * batch_size / (time.perf_counter() - start)
    model.load_state_dict(weights)  # leave the model and optimizer as they were
    optimizer.load_state_dict(opt_state)
    return rate


def run(config, target):
    """Train as train.py does (train.build: the same Trainer, checkpoints in a temporary folder that
    is deleted afterwards), timing each epoch."""
    seed_everything(config["seed"])
    device = resolve_device(config["device"])
    trainer, _ = build(config, device, RunFiles.of(config))
    data_loader = trainer.data_loader
    if trainer.valid_data_loader is None:
        raise UserError("the benchmark needs a validation split: set --validation_split")
    if "accuracy" not in [m.__name__ for m in trainer.metric_ftns]:
        trainer.metric_ftns.append(module_metric.Metric("accuracy", module_metric.accuracy, {}))
    figures = {"seed": config["seed"], **network_figures(trainer, data_loader, device)}
    reached = []

    def after_epoch(epoch, log):
        train_s, eval_s = trainer.epoch_seconds[-1]
        wall = sum(a + b for a, b in trainer.epoch_seconds)
        if not reached and log["val_accuracy"] >= target:
            reached.append((epoch, wall))
        print(
            f"epoch {epoch:4d}  val_accuracy {log['val_accuracy']:6.2f}  train {train_s:6.2f} s  eval {eval_s:5.2f} s",
            flush=True,
        )

    trainer.epoch_callbacks.append(after_epoch)
    try:
        history = trainer.train()
    finally:
        trainer.close_loaders()
    train_times, eval_times = zip(*trainer.epoch_seconds)
    steady = train_times[1:] or train_times  # the first epoch includes worker start-up and warm-up
    return {
        **figures,
        "epochs": len(history),
        "train_s_per_epoch": statistics.mean(steady),
        "eval_s_per_epoch": statistics.mean(eval_times),
        "train_img_per_s": len(data_loader.dataset) / statistics.mean(steady),
        "total_wall_s": sum(train_times) + sum(eval_times),
        f"time_to_{target:g}_s": reached[0][1] if reached else float("nan"),
        f"epoch_to_{target:g}": reached[0][0] if reached else -1,
        "final_val_accuracy": history[-1]["val_accuracy"],
        "final_val_loss": history[-1]["val_loss"],
    }


def network_figures(trainer, data_loader, device):
    """The device, the network's size and receptive field, and the loader's and network's throughput,
    measured without moving the random state the training run draws from."""
    figures = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "parameters": num_params(trainer.model),
        "receptive_field": receptive_field(trace(trainer.model, (1, 3, *data_loader.image_size))),
        "receptive_field_empirical": empirical_receptive_field(trainer.model),
        "loader_workers": data_loader.num_workers,
    }
    rng = get_rng_state()  # the throughput probes draw random numbers; training must not notice
    figures["loader_img_per_s"] = loader_throughput(data_loader)
    figures["model_fwd_bwd_img_per_s"] = model_throughput(trainer, data_loader.batch_sampler.batch_size)
    set_rng_state(rng)  # so the run below is exactly train.py's with this config and seed
    return figures


def benchmark(args):
    base = ConfigParser.from_args(args)
    finals = []
    for seed in args.seeds or [base["seed"]]:
        setup_logging(None, 0)  # warnings only (the benchmark prints its own lines); closes the last run's log
        with tempfile.TemporaryDirectory(prefix="benchmark-") as save_dir:
            quiet = {"save_dir": save_dir, "report": False, "tensorboard": False, "verbosity": 0}
            changes = {("seed",): seed, **{("trainer", key): value for key, value in quiet.items()}}
            figures = run(ConfigParser(base.config, modification=changes), args.target)
        print(
            format_log(
                {
                    k: f"{v:.4f}" if "loss" in k else f"{v:.2f}" if isinstance(v, float) else v
                    for k, v in figures.items()
                },
                width=26,
            ),
            flush=True,
        )
        finals.append(figures["final_val_accuracy"])
    if len(finals) > 1:
        print(
            format_log(
                {
                    "seeds": len(finals),
                    "mean_final_val_accuracy": statistics.mean(finals),
                    "std_final_val_accuracy": statistics.stdev(finals),
                },
                width=26,
            )
        )


def cli(argv=None):
    parser = base_argparser("Benchmark the training recipe of a config")
    add_override_flags(parser)
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="run once per seed (default: the config's)")
    parser.add_argument("--target", type=float, default=87.0, help="validation accuracy (%%) to time (default 87)")
    return run_main(benchmark, parser.parse_args(argv), single_process="benchmarks/train_benchmark.py")


if __name__ == "__main__":
    sys.exit(cli())
