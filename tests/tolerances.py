"""Tolerances for comparing two floating-point computations of the same quantity, derived
from the arithmetic instead of picked to pass on one machine.

Two paths that sum the same terms in another order (fused kernels, a channels-last layout,
batched against one by one, another BLAS, another CPU's vector width, threads) differ by
rounding alone. A sum of n terms computed in any order is within gamma_n * S of the exact
sum, S = sum of |terms|, gamma_n = n*u / (1 - n*u) and u = eps / 2 the unit roundoff
(Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., section 3.1). Two such
paths are therefore within about 2 * gamma_n * S = n * eps * S of each other, whatever the
machine: the error is relative to the magnitudes summed, not to the (maybe cancelled) result.
So a comparison here is

    |a - b| <= rtol * scale,  rtol = k * eps * n,

with n the reduction depth of the computation (or a bound measured and stated where the
computation is not one sum), `scale` the magnitude of the values compared (of the terms where
the test can compute it), and k a small count written out beside each use (a final rounding,
two passes, a softmax after a sum).

For a deep network the bound of one sum is not a proof for the whole: each layer's rounding
enters the next as an input error. `network_rtol` takes the widest reduction n of the network
and relies on this: n * eps is the worst case for one sum, while rounding errors of random
sign make the typical error about sqrt(n) * eps; that leaves a factor sqrt(n) (about 96 for
n = 9216) for the L layers in sequence, whose independent errors grow like sqrt(L) (about 10
for the ~100 layers of a ResNet-101) in a network whose layers keep activations at unit scale.
"""

from __future__ import annotations

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)    # 2^-23 ~ 1.19e-7
EPS16 = float(np.finfo(np.float16).eps)    # 2^-10 ~ 9.8e-4
EPS64 = float(np.finfo(np.float64).eps)    # 2^-52 ~ 2.2e-16


def sum_rtol(depth: int, k: float = 1.0, eps: float = EPS32) -> float:
    """k * eps * depth: two evaluations of sums of `depth` terms, relative to the magnitude of
    the terms (module docstring)."""
    return k * eps * depth


def network_rtol(widest: int, eps: float = EPS32) -> float:
    """Two float32 runs of one deep network that differ only in the order of their sums,
    relative to the magnitude of the compared values: the bound of its widest reduction
    (module docstring for why that covers the layers in sequence)."""
    return eps * widest


def assert_close_in_scale(actual, expected, rtol: float, scale: float | None = None,
                          what: str = "") -> None:
    """|actual - expected| <= rtol * scale elementwise; `scale` defaults to the largest
    |expected| (the magnitude of what was summed, for values that are sums)."""
    actual, expected = _array(actual), _array(expected)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    if scale is None:
        scale = float(np.abs(expected).max()) if expected.size else 0.0
    bound = rtol * scale
    worst = float(np.abs(actual - expected).max()) if expected.size else 0.0
    assert worst <= bound, (f"{what}: largest difference {worst:.3g} exceeds "
                            f"{rtol:.3g} x {scale:.4g} = {bound:.3g}")


def _array(values) -> np.ndarray:
    """float64 numpy array of numbers, numpy arrays or torch tensors (detached)."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64)
