"""DistributedDataParallel under torchrun: one process per GPU (NCCL) or per CPU worker (gloo).

A plain `python train.py` never initialises a process group: every helper here is then a no-op
(rank 0 of a world of 1), so single-process code paths stay exactly as they were."""

import gc
import os
import re
import signal
import textwrap
from datetime import timedelta

import torch
import torch.distributed as dist

from utils.errors import ConfigError, DistributedError, DivergedError, print_error

# how gloo and NCCL report a process that died or hung (they raise plain RuntimeErrors from backward)
LOST_PEER = re.compile(
    r"Connection (reset|closed) by peer|[Tt]imed? ?out|NCCL (error|communicator was aborted)|gloo/transport"
)


def launched_by_torchrun():
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def require_single_process(script):
    if launched_by_torchrun():
        raise ConfigError(
            f"{script} runs in a single process: start it with  python {script} ..., not torchrun "
            "(only train.py trains under torchrun)"
        )


def is_distributed():
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank():
    return dist.get_rank() if is_distributed() else 0


def world_size():
    return dist.get_world_size() if is_distributed() else 1


def is_main():
    return rank() == 0


def init_distributed(device, timeout_s):
    """Join the process group torchrun set up (env:// rendezvous) and return this rank's device.
    device: the config's, resolved. NCCL with cuda:LOCAL_RANK on CUDA, gloo on the CPU. A rank that
    dies makes the others' next collective fail after at most `timeout_s` seconds instead of hanging."""
    if device.type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"device: LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) here; "
                "start at most one process per GPU (--nproc_per_node)"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise ConfigError(f"device: {str(device)!r}: distributed training runs on cuda (NCCL) or cpu (gloo)")
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return device


def cleanup():
    """Leave the process group. The DDP model sits in a reference cycle (trainer, callbacks) and holds
    the group: collected first, while the group and the interpreter are alive; freed later, during
    interpreter shutdown, gloo's threads can abort the process ("terminate called without an active
    exception") after a run that finished."""
    gc.collect()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_object(obj):
    """Rank 0's `obj` on every rank (e.g. the run folder, whose name is a timestamp)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(tensor):
    """Sum of `tensor` over all ranks (in place and returned); NCCL needs it on the GPU."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_objects(obj):
    if not is_distributed():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def average_buffers(model):
    """Make every rank's floating buffers (BatchNorm running mean and variance) the mean over ranks.
    Each rank's BatchNorm saw only its own shard, so without this the replicas would validate and
    be saved with different statistics (timm's distribute_bn does the same)."""
    if not is_distributed():
        return
    world = world_size()
    for buffer in model.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
            buffer.div_(world)


def weights_checksum(model):
    """A float64 sum of every parameter and buffer, weighted by position: equal on all ranks when
    their weights are equal (used to check that DDP kept the replicas in step)."""
    total = torch.zeros((), dtype=torch.float64)
    for i, tensor in enumerate(model.state_dict().values()):
        if tensor.is_floating_point():
            total += (i + 1) * tensor.detach().double().sum().cpu()
    return float(total)


def torchrun_command():
    """How this group was started, to resume it the same way."""
    if world_size() == int(os.environ.get("LOCAL_WORLD_SIZE", -1)):
        return f"torchrun --standalone --nproc_per_node={world_size()} train.py"
    return "torchrun <the same flags> train.py"


def run_group(config, files, device, body):
    """Run `body(device)` as one process of torchrun's group and return what it returns. Joins the
    group (device: the config's, resolved), names the run folder (files: the run's
    checkpoint.saver.RunFiles) after rank 0's timestamp, and turns
    the ways a group ends into one line each: torchrun stopping this process (SIGTERM), a lost or
    silent peer (DistributedError with the resume command), a diverged loss (rank 0 prints it)."""
    device = init_distributed(device, config["trainer"]["dist_timeout"])
    previous = signal.getsignal(signal.SIGTERM)

    try:
        files.run_dir = broadcast_object(files.run_dir)  # rank 0's timestamp names the folder
        files.command = torchrun_command()

        def stopped(signum, frame):  # torchrun stops the group when one process fails
            raise DistributedError(
                f"rank {rank()}: stopped by torchrun (another process failed, or the job was cancelled); "
                + files.resume_hint()
            )

        signal.signal(signal.SIGTERM, stopped)
        result = body(device)
        # every rank has finished its collectives before any tears the group down: a rank that destroys
        # the group while gloo still talks to it can abort the other at exit ("terminate called without
        # an active exception")
        dist.barrier()
        return result
    except DivergedError as e:
        # every rank stops at the same batch (the loss check is all-reduced): rank 0 says why, once,
        # and the others wait at a barrier until it has, so torchrun, which stops the group when the
        # first process exits, cannot cut its line off
        if is_main():
            print_error(e)
        dist.barrier()
        raise SystemExit(2) from None
    except RuntimeError as e:  # a rank died or stopped answering within dist_timeout
        if not (isinstance(e, dist.DistError) or LOST_PEER.search(str(e))):
            raise  # a bug, not a lost process: keep its traceback
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        reason = textwrap.shorten(first, 120, placeholder=" ...")  # whole words
        advice = files.resume_hint()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # torchrun's SIGTERM to the group, next, must not cut this off
        raise DistributedError(f"rank {rank()}: lost contact with the other processes ({reason}); {advice}") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        cleanup()
