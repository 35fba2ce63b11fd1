"""Training benchmark: what bounds an epoch, how fast the recipe learns, and how far it gets.

    python benchmarks/train_benchmark.py -c config.json --data_dir D --validation_split 5000 [--seeds 1 2 3]

For each seed it trains with the config's recipe (same train_one_epoch/evaluate as train.py) and
prints, in `key : value` lines: device, parameters, receptive field, the data loader's throughput
alone (one pass over the training loader, no model), the model's forward+backward throughput alone
(synthetic batches already on the device), seconds per epoch for training and for evaluation,
training images per second, the wall time (training + evaluation, from the first epoch) at which
validation accuracy first reached --target, and the final-epoch validation accuracy. With several
seeds, the mean and standard deviation of the final accuracy close the output. Nothing is saved.
"""

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import model.metric as module_metric  # noqa: E402
from logger.format import format_log  # noqa: E402
from model.spec import empirical_receptive_field, receptive_field, trace  # noqa: E402
from parse_config import ConfigParser  # noqa: E402
from trainer import build_lr_scheduler, evaluate, train_one_epoch  # noqa: E402
from trainer.precision import autocast_for, resolve_amp  # noqa: E402
from trainer.schedulers import SchedulerStepper  # noqa: E402
from utils import UserError, resolve_device, seed_everything  # noqa: E402
from utils.cli import run_main  # noqa: E402
from utils.overrides import add_override_flags, base_argparser  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def loader_throughput(loader):
    """Images per second of the training loader alone (augmentation in its workers)."""
    start, n = time.perf_counter(), 0
    for images, _ in loader:
        n += len(images)
    return n / (time.perf_counter() - start)


def model_throughput(model, criterion, optimizer, batch_size, device, autocast, channels_last, steps=30):
    """Images per second of forward+backward+step on synthetic batches already on the device."""
    model.train()
    x = torch.randn(batch_size, 3, 32, 32, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch_size,), device=device)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for i in range(steps + 5):
        if i == 5:
            sync(device)
            start = time.perf_counter()
        with autocast():
            loss = criterion(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync(device)
    rate = steps * batch_size / (time.perf_counter() - start)
    model.load_state_dict(state)  # leave the model as it was
    optimizer.state.clear()
    return rate


def run(config, target):
    seed_everything(config["seed"])
    device = resolve_device(config["device"])
    cfg = config["trainer"]
    data_loader = config.init_obj("data_loader")
    valid_loader = data_loader.split_validation()
    if valid_loader is None:
        raise UserError("the benchmark needs a validation split: set --validation_split")
    model = config.init_obj("arch").to(device)
    layers = trace(model)
    if cfg["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    criterion = config.init_obj("loss")
    metrics = module_metric.build_metrics(config["metrics"])
    if "accuracy" not in [m.__name__ for m in metrics]:
        metrics.append(module_metric.Metric("accuracy", module_metric.accuracy, {}))
    optimizer = config.init_obj("optimizer", [p for p in model.parameters() if p.requires_grad])
    scheduler = build_lr_scheduler(config, optimizer, steps_per_epoch=len(data_loader))
    stepper = SchedulerStepper(scheduler, cfg["monitor"])  # the Trainer's stepping rules
    dtype = resolve_amp(device, cfg["amp"])[0]
    autocast = autocast_for(device, cfg["amp"])
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None  # as the Trainer does for fp16

    figures = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "seed": config["seed"],
        "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "receptive_field": receptive_field(layers),
        "receptive_field_empirical": empirical_receptive_field(model),
        "loader_workers": data_loader.num_workers,
        "loader_img_per_s": loader_throughput(data_loader),
        "model_fwd_bwd_img_per_s": model_throughput(
            model, criterion, optimizer, data_loader.batch_sampler.batch_size, device, autocast, cfg["channels_last"]
        ),
    }
    train_times, eval_times, wall, reached, val = [], [], 0.0, None, {}
    for epoch in range(1, cfg["epochs"] + 1):
        sync(device)
        start = time.perf_counter()
        train_log = train_one_epoch(
            model,
            criterion,
            metrics,
            optimizer,
            data_loader,
            device,
            batch_scheduler=stepper.batch_scheduler,
            scaler=scaler,
            autocast=autocast,
            channels_last=cfg["channels_last"],
            desc=f"epoch {epoch}",
        )
        sync(device)
        middle = time.perf_counter()
        val = evaluate(
            model, criterion, metrics, valid_loader, device, autocast=autocast, channels_last=cfg["channels_last"]
        )
        sync(device)
        end = time.perf_counter()
        stepper.after_epoch({**train_log, **{f"val_{k}": v for k, v in val.items()}})
        train_times.append(middle - start)
        eval_times.append(end - middle)
        wall += end - start
        if reached is None and val["accuracy"] >= target:
            reached = (epoch, wall)
        print(
            f"epoch {epoch:4d}  val_accuracy {val['accuracy']:6.2f}  "
            f"train {middle - start:6.2f} s  eval {end - middle:5.2f} s",
            flush=True,
        )
    steady = train_times[1:] or train_times  # the first epoch includes worker start-up and warm-up
    figures.update(
        {
            "epochs": cfg["epochs"],
            "train_s_per_epoch": statistics.mean(steady),
            "eval_s_per_epoch": statistics.mean(eval_times),
            "train_img_per_s": len(data_loader.dataset) / statistics.mean(steady),
            "total_wall_s": wall,
            f"time_to_{target:g}_s": reached[1] if reached else float("nan"),
            f"epoch_to_{target:g}": reached[0] if reached else -1,
            "final_val_accuracy": val["accuracy"],
            "final_val_loss": val["loss"],
        }
    )
    return figures


def benchmark(args):
    base = ConfigParser.from_args(args)
    finals = []
    for seed in args.seeds or [base["seed"]]:
        figures = run(ConfigParser(base.config, modification={("seed",): seed}), args.target)
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


def main(argv=None):
    parser = base_argparser("Benchmark the training recipe of a config")
    add_override_flags(parser)
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="run once per seed (default: the config's)")
    parser.add_argument("--target", type=float, default=87.0, help="validation accuracy (%%) to time (default 87)")
    return run_main(benchmark, parser.parse_args(argv), single_process="benchmarks/train_benchmark.py")


if __name__ == "__main__":
    sys.exit(main())
