"""trainer.amp "auto" picks bf16 where it is fast (CUDA) and fp32 on the CPU; "bf16" forces it anywhere."""

import torch

import trainer.precision as tt


def test_resolve_amp():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    dtype, why = tt.resolve_amp(cpu, "auto")
    assert dtype is None and why.startswith("fp32 on the CPU")
    assert tt.Precision.of_run(cpu, "auto")[0].autocast is __import__("contextlib").nullcontext
    assert tt.resolve_amp(cpu, "off")[0] is None
    assert tt.resolve_amp(cpu, "fp16") == (None, "fp32: trainer.amp fp16 applies on CUDA only")
    assert tt.resolve_amp(cpu, "bf16")[0] == torch.bfloat16
    assert tt.resolve_amp(cuda, "auto")[0] == torch.bfloat16 and tt.resolve_amp(cuda, "fp16")[0] == torch.float16
    with tt.Precision.of_run(cpu, "bf16")[0].autocast():
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
