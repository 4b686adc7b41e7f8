"""Giving back the memory of weights read from a memory-mapped checkpoint once a cast copy of them exists.

:func:`repaint.checkpoints.formats.read_checkpoint` maps the file (``torch.load(mmap=True)``, safetensors): a tensor's
pages are read from the file when first touched and then count in the process's resident memory for as long as the
mapping lives, which is as long as the float32 network does. Casting the 256x256 UNet to bfloat16 touches every page,
so without this the process holds the float32 weights (2.06 GiB) beside their bfloat16 copy for the whole run.

:func:`releaser` takes a snapshot of the file mappings that hold no written page (``/proc/self/smaps``: no
``Anonymous`` memory in them, so every page equals the file's bytes) and returns a function that drops a tensor's
whole pages from such a mapping (``madvise(MADV_DONTNEED)``). The tensor stays valid: a later read pages the bytes in
again from the file. Memory that is not a clean file mapping (an ordinary tensor, a mapping with a page written to)
is never touched, and on a system without ``/proc/self/smaps`` the function does nothing.
"""

from __future__ import annotations

import ctypes
import mmap
from collections.abc import Callable
from pathlib import Path

import torch

__all__ = ["releaser", "clean_file_mappings"]

SMAPS = Path("/proc/self/smaps")


def clean_file_mappings(smaps: Path = SMAPS) -> list[tuple[int, int]]:
    """[(start, end)] of the mappings of a file (a path, not a library's ``[heap]``/``[anon]`` region) in which no
    page has been written; [] where ``smaps`` cannot be read."""
    try:
        text = smaps.read_text()
    except OSError:
        return []
    found, current = [], None
    for line in text.splitlines():
        fields = line.split()
        # a mapping's header: START-END PERMS OFFSET DEVICE INODE PATH
        if fields and "-" in fields[0] and ":" not in fields[0]:
            start, end = (int(value, 16) for value in fields[0].split("-"))
            is_file = len(fields) >= 6 and fields[5].startswith("/") and fields[4] != "0"
            current = (start, end) if is_file else None
        elif current is not None and fields[:1] == ["Anonymous:"]:
            if fields[1] == "0":
                found.append(current)
            current = None
    return found


def releaser(smaps: Path = SMAPS) -> Callable[[torch.Tensor], int]:
    """A function ``release(tensor) -> bytes given back`` for the clean file mappings of this moment (see the module
    docstring). Take a new one after anything may have written to a mapping."""
    mappings = clean_file_mappings(smaps)
    madvise = _madvise() if mappings else None

    def release(tensor: torch.Tensor) -> int:
        if madvise is None or tensor.device.type != "cpu" or tensor.numel() == 0 or not tensor.is_contiguous():
            return 0
        first = tensor.data_ptr()
        last = first + tensor.numel() * tensor.element_size()
        if not any(start <= first and last <= end for start, end in mappings):
            return 0
        page = mmap.PAGESIZE
        start, stop = -(-first // page) * page, last // page * page   # whole pages only: a neighbour may share the ends
        if stop <= start or madvise(ctypes.c_void_p(start), ctypes.c_size_t(stop - start), mmap.MADV_DONTNEED) != 0:
            return 0
        return stop - start

    return release


def _madvise():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.madvise
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    function.restype = ctypes.c_int
    return function if hasattr(mmap, "MADV_DONTNEED") else None
