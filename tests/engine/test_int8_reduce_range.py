"""INT8 weights in 7 bits where the CPU's uint8×int8 kernels saturate (x86 without VNNI), 8 bits elsewhere."""

from __future__ import annotations

import pytest

from kiln.engine.hardware import int8_dot_products_saturate, int8_reduce_range
from kiln.errors import KilnError


def test_only_x86_without_vnni_saturates() -> None:
    assert int8_dot_products_saturate(["sse4_2", "avx", "avx2", "fma"])
    assert int8_dot_products_saturate(["avx2", "avx512f", "avx512bw"])  # AVX-512 without VNNI still saturates
    assert not int8_dot_products_saturate(["avx2", "avx512f", "avx512_vnni"])
    assert not int8_dot_products_saturate(["avx2", "avx_vnni"])
    assert not int8_dot_products_saturate(["avx2", "amx_tile", "amx_int8"])


def test_the_setting_is_auto_true_or_false() -> None:
    assert int8_reduce_range("auto") == int8_dot_products_saturate()
    assert int8_reduce_range(None) == int8_dot_products_saturate()
    assert int8_reduce_range(True) and int8_reduce_range("true")
    assert not int8_reduce_range(False) and not int8_reduce_range("False")
    with pytest.raises(KilnError, match="reduce_range must be true, false or auto"):
        int8_reduce_range("sometimes")
