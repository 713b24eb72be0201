import numpy as np
import torch

from spatialfactors.models._operator import DataOperator


def _unaligned(shape, seed=0):
    """A C-contiguous float32 array whose buffer starts 4 bytes past a 64-byte boundary."""
    rng = np.random.default_rng(seed)
    raw = np.empty(int(np.prod(shape)) + 32, dtype=np.float32)
    offset = (-raw.ctypes.data // 4 + 1) % 16
    out = raw[offset : offset + int(np.prod(shape))].reshape(shape)
    out[:] = rng.random(shape, dtype=np.float32)
    assert out.ctypes.data % 64 == 4
    return out


def test_streaming_products_match_the_aligned_copy():
    x = _unaligned((9000, 50))  # more rows than one block
    copy, stream = DataOperator(x), DataOperator(x, copy_unaligned=False)
    assert stream._stream and not copy._stream
    assert np.shares_memory(stream._x.numpy(), x)  # no second copy of X
    m = torch.rand(50, 7)
    r = torch.rand(7, 9000)
    torch.testing.assert_close(stream.matmul(m), copy.matmul(m), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(stream.rmatmul(r), copy.rmatmul(r), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(stream.times_xt(m.T.contiguous()), copy.times_xt(m.T.contiguous()), rtol=1e-5, atol=1e-5)
    # Same compression up to rounding: the captured energy agrees.
    a, b = stream.compress(10), copy.compress(10)
    assert abs(a.relative_error(stream) - b.relative_error(copy)) < 1e-5
