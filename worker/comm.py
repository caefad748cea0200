"""What crosses the network each round, in the number format of the spec's ``comm.dtype``.

A round sends anchors ``x`` out (one shared, or Parle's K) and gets each replica's result
``[μ | BatchNorm buffers]`` back. ``float32`` sends both as they are (bit for bit the
uncompressed service). ``bfloat16`` and ``float16`` send them in 16 bits, half the bytes;
everything that *computes* stays float32: the outer step, the strategies' state and momentum,
the replicas' inner loop, checkpoints. With ``q`` the rounding to the 16-bit format::

    anchor out:  q(x)          the replica decodes it and starts its chain from x̂ = q(x)
    result back: q(μ − x̂)      the coordinator decodes it and takes μ̂ = x + q(μ − x̂)

``q`` rounds to nearest, ties to even: ``|q(v) − v| ≤ 2⁻⁸|v|`` for bfloat16 (8 significant
bits, float32's exponent range) and ``≤ 2⁻¹¹|v|`` for float16 (11 bits, |v| ≤ 65504; below
2⁻¹⁴ float16 is subnormal and the error is at most 2⁻²⁵ absolute).

Why the result is a displacement and not μ itself: rounding μ would erase every move smaller
than half a unit in the last place of the weight (up to 2⁻⁸|x| in bfloat16), so with
``outer.lr`` = 1 (x ← μ̄) small updates would vanish round after round. ``q(μ − x̂)`` keeps
the move to 2⁻⁸ of *itself*, and the coordinator adds it to its own float32 ``x`` (not to x̂): the anchor's
rounding error ``x − x̂`` never enters the pseudo-gradient ``x − μ̂ = −q(μ − x̂)``, and float32
``x`` accumulates even tiny moves. The one approximation left: replicas take their gradients
at x̂, within 2⁻⁸ (bfloat16) of x in every weight, relatively.

BatchNorm statistics are part of the same vector and travel the same way (anchor rounded,
result as a displacement from the anchor's statistics): one contiguous array per message
keeps Ray's zero-copy path, and a relative error of 2⁻⁸ is far below the statistics' own
minibatch noise; the coordinator's mean of them stays float32.

Range: a *finite* value the format cannot carry (it would round to ±inf: |v| ≥ 65520 in
float16, |v| > 3.39e38 in bfloat16) is rejected with :class:`CommRangeError`, never clamped
(a clamped weight would be wrong without notice). NaN and ±inf pass through unchanged: the
round's divergence check reports them. A coordinator anchor out of range fails the job;
a replica's displacement out of range is reported as that replica diverging.

numpy has no bfloat16: it travels as a ``uint16`` array of bfloat16 bit patterns, rounded by
torch's ``.to(torch.bfloat16)`` and decoded exactly by moving the 16 bits into the high half
of a float32.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

DTYPES = ("float32", "bfloat16", "float16")
#: the numpy dtype each format travels as
WIRE = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(np.uint16), "float16": np.dtype(np.float16)}
#: the largest finite value of each format
MAX = {"float32": float(np.finfo(np.float32).max), "bfloat16": float(torch.finfo(torch.bfloat16).max),
       "float16": float(np.finfo(np.float16).max)}


class CommRangeError(ValueError):
    """Finite values that ``comm.dtype`` cannot carry (they would arrive as ±inf)."""


def encode(x: np.ndarray, dtype: str, what: str = "values") -> np.ndarray:
    """``x`` (float32) as it travels in ``dtype``; float32 returns ``x`` itself (no copy)."""
    if dtype == "float32":
        return x
    x = np.ascontiguousarray(x, dtype=np.float32)
    if dtype == "bfloat16":
        with warnings.catch_warnings():  # object-store arrays are read-only; we only read them
            warnings.simplefilter("ignore", UserWarning)
            t = torch.from_numpy(x)
        wire = t.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
        inf = (wire & 0x7FFF) == 0x7F80
    elif dtype == "float16":
        with np.errstate(over="ignore"):
            wire = x.astype(np.float16)
        inf = np.isinf(wire)
    else:
        raise ValueError(f"comm.dtype: must be one of {', '.join(DTYPES)} (got {dtype!r})")
    if inf.any() and (bad := inf & np.isfinite(x)).any():
        raise CommRangeError(
            f"comm.dtype {dtype}: {int(bad.sum())} of {x.size} {what} are beyond its range ±{MAX[dtype]:.6g} "
            f"(largest |value| {float(np.abs(x[bad]).max()):.6g}) and would arrive as ±inf; "
            f"use comm.dtype {'bfloat16 or ' if dtype == 'float16' else ''}float32")
    return wire


def decode(wire: np.ndarray, dtype: str) -> np.ndarray:
    """The float32 values of a ``dtype`` wire array (exact); float32 returns ``wire`` itself."""
    if dtype == "float32":
        return wire
    if dtype not in WIRE or wire.dtype != WIRE[dtype]:
        raise TypeError(f"comm.dtype {dtype}: expected a {WIRE.get(dtype, '?')} wire array, got {wire.dtype}")
    if dtype == "bfloat16":
        return (wire.astype(np.uint32) << 16).view(np.float32)
    return wire.astype(np.float32)


def pack_result(mu: np.ndarray, start: np.ndarray, dtype: str) -> np.ndarray:
    """Replica side: ``μ`` itself in float32, else ``q(μ − x̂)`` (``start`` = x̂, the decoded anchor)."""
    if dtype == "float32":
        return mu
    return encode(mu - start, dtype, "values of the result's displacement μ − x̂")


def unpack_result(wire: np.ndarray, anchor: np.ndarray, dtype: str) -> np.ndarray:
    """Coordinator side: the float32 result, ``x + q(μ − x̂)`` with ``anchor`` = the float32 x sent."""
    if dtype == "float32":
        return wire
    return anchor + decode(wire, dtype)
