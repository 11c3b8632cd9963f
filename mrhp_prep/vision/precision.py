"""Plain float32 arithmetic for the detector, as the reference extractor computes.

On recent NVIDIA GPUs torch lets cuDNN convolutions (and, if asked, matrix products) use
TF32, which keeps 10 bits of mantissa: enough to change which proposals the RPN ranks
first. `full_float32` turns TF32 off for the duration of a forward pass.
"""

from __future__ import annotations

import contextlib
from typing import Iterator


@contextlib.contextmanager
def full_float32() -> Iterator[None]:
    import torch

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
