"""The f16 -> f32 lookup table of the decode kernels: exact, and built without a floating-point warning
(widening f16 signalling NaNs raises the invalid flag on aarch64, which every command printed as a note)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np


def f16_bits_to_f32_bits(h: np.ndarray) -> np.ndarray:
    """IEEE half -> single by integer operations only (reference)."""
    h = h.astype(np.uint32)
    sign, exp, mant = (h & 0x8000) << 16, (h >> 10) & 0x1F, h & 0x3FF
    normal = sign | ((exp + 112) << 23) | (mant << 13)
    special = sign | (0xFF << 23) | (mant << 13)  # inf and NaN
    # subnormal: mant * 2**-24, normalized by the position of mant's top bit
    top = np.floor(np.log2(np.maximum(mant, 1))).astype(np.uint32)
    sub = sign | ((top + 103) << 23) | ((mant << (23 - top)) & 0x7FFFFF)
    zero = sign
    return np.where(exp == 31, special, np.where(exp > 0, normal, np.where(mant > 0, sub, zero))).astype(np.uint32)


def test_table_is_exact_for_every_non_nan():
    from edgellm.kernels.matvec import F16_TABLE

    h = np.arange(65536, dtype=np.uint32)
    nan = ((h >> 10) & 0x1F == 31) & (h & 0x3FF != 0)
    assert F16_TABLE.dtype == np.float32 and F16_TABLE.shape == (65536,)
    assert np.array_equal(F16_TABLE.view(np.uint32)[~nan], f16_bits_to_f32_bits(h)[~nan])
    assert np.isnan(F16_TABLE[nan]).all() and nan.sum() == 2046


def test_table_builds_without_fp_warning():
    """Floating-point errors raise and warnings are errors: importing the kernels must still succeed."""
    code = (
        "import numpy as np, warnings; np.seterr(all='raise'); warnings.simplefilter('error')\n"
        "import edgellm.kernels.matvec"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
