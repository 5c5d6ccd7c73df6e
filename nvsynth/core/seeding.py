"""Randomness: one seed, derived per (subject, frame, view).

Every random choice for a view comes from :func:`view_rng`, so output never
depends on processing order or on the number of workers.
"""

from __future__ import annotations

import zlib

import numpy as np

#: Streams, so that pose sampling, appearance and gaze never share draws.
STREAM_POSE = 0
STREAM_APPEARANCE = 1
STREAM_GAZE = 2  # render.gaze other than follow-head (added last: the other streams' draws do not change)


def subject_key(subject: str) -> int:
    """A stable integer for a subject name (CRC-32 of its UTF-8 bytes)."""
    return zlib.crc32(subject.encode("utf-8"))


def view_rng(seed: int, subject: str, frame_index: int, view_index: int, stream: int) -> np.random.Generator:
    """The generator for one (seed, subject, frame, view, stream)."""
    ss = np.random.SeedSequence(
        [int(seed) & 0xFFFFFFFF, subject_key(subject), int(frame_index), int(view_index), stream]
    )
    return np.random.Generator(np.random.PCG64(ss))
