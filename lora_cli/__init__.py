"""lora: reproduce, measure and extend the classic LoRA demonstrations."""

import os as _os

from lora_cli.runtime.threads import SPIN_ENV as _SPIN_ENV

__version__ = "0.1.0"

# OpenMP reads its wait policy once, when torch loads it: set it before anything imports torch.
# A wait policy or spin count the person set already wins. Why: lora_cli/runtime/threads.py.
if not ({"OMP_WAIT_POLICY", *_SPIN_ENV} & set(_os.environ)):
    _os.environ.update(_SPIN_ENV)
