"""trainer.amp "auto" picks bf16 only where it is fast: CUDA, or a CPU with native bf16."""

import torch

import trainer.precision as tt


def test_cpu_bf16_detection_reads_the_flags(tmp_path):
    with_bf16 = tmp_path / "a"
    with_bf16.write_text("flags\t\t: fpu avx512f avx512_bf16 avx512_vnni\n")
    amx = tmp_path / "b"
    amx.write_text("flags\t\t: fpu avx512f amx_bf16 amx_tile\n")
    without = tmp_path / "c"
    without.write_text("flags\t\t: fpu avx512f avx512bw avx512_vnni\n")
    assert tt.cpu_has_native_bf16(str(with_bf16)) and tt.cpu_has_native_bf16(str(amx))
    assert not tt.cpu_has_native_bf16(str(without)) and not tt.cpu_has_native_bf16(str(tmp_path / "missing"))


def test_resolve_amp(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(tt, "cpu_has_native_bf16", lambda: False)
    dtype, why = tt.resolve_amp(cpu, "auto")
    assert dtype is None and why.startswith("fp32") and "no native bf16" in why
    assert tt.autocast_for(cpu, "auto") is __import__("contextlib").nullcontext
    monkeypatch.setattr(tt, "cpu_has_native_bf16", lambda: True)
    assert tt.resolve_amp(cpu, "auto")[0] == torch.bfloat16
    assert tt.resolve_amp(cpu, "off")[0] is None
    assert tt.resolve_amp(cpu, "fp16") == (None, "fp32: trainer.amp fp16 applies on CUDA only")
    assert tt.resolve_amp(cpu, "bf16")[0] == torch.bfloat16
    assert tt.resolve_amp(cuda, "auto")[0] == torch.bfloat16 and tt.resolve_amp(cuda, "fp16")[0] == torch.float16
    with tt.autocast_for(cpu, "bf16")():
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
