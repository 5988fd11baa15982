"""The symmetries of the square that training patches are given, and their inverses.

A symmetry is a code in ``0..7``: code ``k`` turns a patch by ``k % 4`` quarter turns (counter-clockwise, rows
towards columns), after mirroring it left-right when ``k >= 4``. The four that keep rows as rows are ``0`` (none),
``4`` (left-right), ``6`` (upside down) and ``2`` (both, a half turn).

A patch's pixels keep their own noise under any symmetry, but not their neighbours: a camera's noise is correlated
differently to the right than to the left of a pixel of a given grid phase, and differently along rows than along
columns. What is fitted to the noise's spatial correlation therefore reads each patch turned back :func:`upright`.
"""

from __future__ import annotations

import numpy as np
import torch

# The codes of the four symmetries that keep rows as rows, indexed by a draw in 0..3 (bit 0 left-right, bit 1
# upside down).
ROW_KEEPING = (0, 4, 6, 2)


def oriented(image: np.ndarray, code: int) -> np.ndarray:
    """``image`` ``(H, W, ...)`` under symmetry ``code`` (a view; square images keep their shape)."""
    return np.rot90(image[:, ::-1] if code >= 4 else image, k=code % 4)


def upright(images: torch.Tensor, codes: torch.Tensor | None) -> torch.Tensor:
    """Undoes :func:`oriented`: ``images`` ``(B, C, P, P)``, each under its symmetry ``codes[b]`` (``(B,)`` integers,
    None for none), turned back to how the camera laid them out."""
    if codes is None:
        return images
    out = []
    for image, code in zip(images, codes.tolist(), strict=True):
        image = torch.rot90(image, k=-(code % 4), dims=(-2, -1))
        out.append(image.flip(-1) if code >= 4 else image)
    return torch.stack(out)
