"""Why torch could not read a file with `torch.load(..., weights_only=True)`, in our words.

torch's own message for a refused file advises loading it again with `weights_only=False`,
which would run whatever code the file holds: the one thing a file from elsewhere must never
do. Every reader of `.pth`/`.pt` files (detector weights, training checkpoints, imported
features) words its refusal with `why_unreadable` instead of repeating torch's message.
"""

from __future__ import annotations

import os
import pickle
import re

_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
# Lines of torch's message about turning the weights-only reader off or trusting the file.
_ADVICE = re.compile(r"weights_only|trust|safe_globals|torch\.load|documentation", re.IGNORECASE)


def _looks_like_torch(path: str | os.PathLike) -> bool:
    """Whether a file starts as torch.save writes: a zip archive, or (older files) a pickle."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(2)
    except OSError:
        return True     # let the reader's own error speak
    return head.startswith(b"PK") or head[:1] == b"\x80"


def why_unreadable(exc: BaseException, path: str | os.PathLike | None = None) -> str:
    """The reason a weights-only read of `path` raised `exc`, without torch's advice to turn
    the weights-only reader off."""
    text = str(exc)
    found = _GLOBAL.search(text)
    if found:
        return (f"it holds a pickled Python object ({found.group(1)}), which is never "
                f"unpickled here (that could run code from the file): only tensors, numbers, "
                f"strings and lists or dicts of them are read")
    not_torch = ("it is not a file torch.save wrote (neither a torch zip archive nor a "
                 "pickle of tensors)")
    if path is not None and os.path.isfile(path) and os.path.getsize(path) == 0:
        return "it is empty"
    if path is not None and not _looks_like_torch(path):
        return not_torch
    if "zip archive" in text or "central directory" in text:
        return "it is damaged or truncated (its zip archive is incomplete)"
    if isinstance(exc, EOFError):
        return "it ends early (empty or truncated)"
    if ("Unsupported operand" in text or "invalid load key" in text
            or isinstance(exc, (pickle.UnpicklingError, KeyError, IndexError))):
        return not_torch
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not _ADVICE.search(line)]
    return lines[0] if lines else type(exc).__name__
