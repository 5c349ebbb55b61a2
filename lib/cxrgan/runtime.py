"""Where tensors run, for every tool: the device, data-parallel processes under torchrun, bf16 autocast (on CUDA,
and on the CPU when asked) and the memory layout on CUDA. Tools call ``setup`` once; nothing here is global state
beyond what torch itself keeps."""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import UserError


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    precision: str = "auto"  # a row of PRECISIONS

    @property
    def main(self) -> bool:
        """The one process that writes files."""
        return self.rank == 0

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self):
        """A fresh autocast context: bf16 on CUDA; on the CPU nothing (float32, bit-reproducible) unless precision
        is "bf16"; nothing anywhere with "fp32"."""
        if self.precision == "fp32" or (not self.cuda and self.precision != "bf16"):
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def layout(self, x):
        """Channels-last on CUDA (faster convolutions with cuDNN); unchanged on the CPU. Modules or tensors."""
        if not self.cuda:
            return x
        return x.to(memory_format=torch.channels_last) if isinstance(x, torch.nn.Module) else \
            x.contiguous(memory_format=torch.channels_last)


# --precision: what the autocast contexts of the training loops do
PRECISIONS = {
    "auto": "bf16 autocast on CUDA, float32 on the CPU",
    "bf16": "bf16 autocast on CUDA and on the CPU (faster where the CPU has AMX or AVX512-BF16)",
    "fp32": "float32 everywhere",
}


def resolve_device(device: str) -> torch.device:
    """``auto`` (CUDA when visible, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``; a one-line error otherwise."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda requested but no CUDA device is visible; use --device cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}") from None


def setup(device: str, distributed: bool = False, precision: str = "auto") -> Runtime:
    """Resolve ``device``; with ``distributed``, join the torchrun process group (nccl on GPU, gloo on CPU) when
    WORLD_SIZE > 1, one GPU per local rank. On CUDA, cuDNN picks the fastest kernels for the shapes it sees.
    ``precision``: a row of PRECISIONS."""
    if precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    world = int(os.environ.get("WORLD_SIZE", "1")) if distributed else 1
    rank = int(os.environ.get("RANK", "0")) if distributed else 0
    local_rank = int(os.environ.get("LOCAL_RANK", "0")) if distributed else 0
    dev = resolve_device(device)
    if dev == torch.device("cuda") and world > 1:
        dev = torch.device(f"cuda:{local_rank}")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        torch.backends.cudnn.benchmark = True
    return Runtime(dev, rank, world, local_rank, precision)


def teardown(rt: Runtime) -> None:
    if rt.world > 1 and dist.is_initialized():
        dist.destroy_process_group()
