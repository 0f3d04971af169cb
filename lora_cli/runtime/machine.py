"""What machine a run ran on, in words, for its manifest and its report."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_name() -> str:
    """The processor's model name (Linux: /proc/cpuinfo; elsewhere what platform knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def describe() -> str:
    """e.g. "Linux x86_64, AMD EPYC 7B13, 2 CPUs" (and the GPU, when torch sees one)."""
    text = f"{platform.system()} {platform.machine()}, {cpu_name()}, {os.cpu_count()} CPUs"
    import torch

    if torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name(0)}"
    return text
