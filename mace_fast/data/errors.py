"""Errors raised for bad input data.

Every check in ``mace_fast.data`` raises :class:`InputError` with a message that names
what is at fault (file, frame, key, atom index or element), so a bad data set fails
loudly at load time instead of turning into NaNs during training.
"""

from typing import Optional


class InputError(ValueError):
    """Bad input data; the message says where (file, frame, key, atom, element)."""


def location(source: Optional[str], frame: Optional[int]) -> str:
    """Human-readable origin of a structure, e.g. ``"data.xyz, frame 3"``.

    Frames are counted from 0, as in ``ase.io.read``.
    """
    parts = []
    if source is not None:
        parts.append(str(source))
    if frame is not None:
        parts.append(f"frame {frame}")
    return ", ".join(parts) if parts else "structure"
