"""Which device, runtime and precision a job runs on, decided without importing torch where possible.

On a machine with no accelerator device nodes, ``--device auto`` is the CPU without asking
torch (a 2-4 s import): a cache hit, or an extraction whose network runs on OpenVINO, then
never loads torch at all. Where a GPU may exist, torch is asked, as before.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sys
from pathlib import Path

from featcache.common.errors import BadInput

PRECISIONS = ("fp32", "bf16", "fp16", "int8", "auto")
RUNTIMES = ("auto", "torch", "openvino")


def _maybe_accelerator() -> bool:
    """False only when no CUDA/ROCm device node exists and this is not a Mac (MPS)."""
    if sys.platform == "darwin":
        return True
    return bool(os.path.exists("/dev/nvidiactl") or glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/kfd"))


def resolve_device(name: str) -> str:
    """``auto|cpu|cuda|cuda:N|mps`` -> the device this job uses, as a string ("cpu", "cuda:1")."""
    if name == "cpu":
        return "cpu"
    if name == "auto" and not _maybe_accelerator():
        return "cpu"
    if name != "auto" and name not in ("cuda", "mps") and not name.startswith("cuda:"):
        raise BadInput(f"--device {name!r}: expected auto, cpu, cuda, cuda:N or mps")
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BadInput(f"--device {name!r}: expected auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BadInput(f"--device {name}: no CUDA device is available")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise BadInput(f"--device {name}: there are only {torch.cuda.device_count()} CUDA devices")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise BadInput(f"--device {name}: MPS is not available on this machine")
    return str(device)


def device_type(device: object) -> str:
    """"cuda" for "cuda:1" (or a torch.device)."""
    return str(device).split(":")[0]


def pick_device(name: str):  # -> torch.device
    """The torch.device of :func:`resolve_device` (fine-tuning and the torch runtime)."""
    import torch

    return torch.device(resolve_device(name))


def cpu_flags() -> set[str]:
    try:
        return set(Path("/proc/cpuinfo").read_text().split("flags", 2)[1].split("\n", 1)[0].split(":", 1)[1].split())
    except (OSError, IndexError):
        return set()


def cpu_has_native_bf16() -> bool:
    flags = cpu_flags()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def openvino_installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


def resolve_runtime(runtime: str, device: str) -> str:
    """``auto``: OpenVINO for a CPU forward when it is installed (1.5-3x torch's speed here), torch
    on CUDA and MPS. An explicit ``openvino`` runs on the CPU only."""
    if runtime not in RUNTIMES:
        raise BadInput(f"--runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
    if runtime == "auto":
        return "openvino" if device == "cpu" and openvino_installed() else "torch"
    if runtime == "openvino":
        if device != "cpu":
            raise BadInput(f"--runtime openvino runs on the CPU; --device {device} needs --runtime torch")
        if not openvino_installed():
            raise BadInput("--runtime openvino: OpenVINO is not installed (pip install openvino, or 'featcache[openvino]')")
    return runtime


def resolve_precision(precision: str, device: str, runtime: str = "torch") -> str:
    """``auto``: bf16 where the hardware computes it natively (fp16 on a CUDA GPU without bf16), else fp32.
    int8 is OpenVINO's post-training quantization, so it needs that runtime."""
    if precision not in PRECISIONS:
        raise BadInput(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "int8" and runtime != "openvino":
        raise BadInput("--precision int8 is OpenVINO's post-training quantization: it needs --runtime openvino "
                         "(or auto with OpenVINO installed) and a CPU")
    if precision != "auto":
        return precision
    kind = device_type(device)
    if kind == "cuda":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if kind == "cpu":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return "fp32"
