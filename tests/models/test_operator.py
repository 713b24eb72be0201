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


def test_sparse_products_on_the_cpu_match_the_dense_ones():
    import scipy.sparse as sp

    x = sp.random(3000, 40, density=0.2, format="csr", dtype=np.float64, random_state=0)
    sparse, dense = DataOperator(x, dtype="float64"), DataOperator(x.toarray(), dtype="float64")
    assert sparse.sparse and sparse._xt is None  # no transposed copy kept on the CPU
    assert np.shares_memory(sparse._csr.data, x.data)  # nor a copy in the working precision
    m, r = torch.rand(40, 7, dtype=torch.float64), torch.rand(7, 3000, dtype=torch.float64)
    torch.testing.assert_close(sparse.matmul(m), dense.matmul(m), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sparse.rmatmul(r), dense.rmatmul(r), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sparse.rmatmul(r[:, ::1].T.contiguous().T), dense.rmatmul(r), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sparse.rmatmul_float64(r), dense.rmatmul_float64(r), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sparse.times_xt(m.T.contiguous()), dense.times_xt(m.T.contiguous()))
    buf = torch.empty(7, 3000, dtype=torch.float64)
    assert sparse.times_xt(m.T.contiguous(), out=buf).data_ptr() == buf.data_ptr()  # the solver's buffer
    torch.testing.assert_close(buf, dense.times_xt(m.T.contiguous()), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sparse.col_sq_norms, dense.col_sq_norms)
    for out in (sparse.matmul(m), sparse.rmatmul(r)):  # aligned, like every torch buffer (MKL)
        assert out.data_ptr() % 64 == 0 and out.dtype == torch.float64
    # float32 working precision: a float32 copy, products in float32.
    single = DataOperator(x, dtype="float32")
    assert single._csr.dtype == np.float32 and single.rmatmul(r.float()).dtype == torch.float32
    torch.testing.assert_close(single.rmatmul(r.float()).double(), dense.rmatmul(r), rtol=1e-4, atol=1e-4)


def test_torch_sparse_products_match_the_compiled_ones(monkeypatch):
    # The torch CSR path is the one a GPU runs; here it runs on the CPU against the kernels.
    import scipy.sparse as sp

    x = sp.random(500, 30, density=0.2, format="csr", dtype=np.float64, random_state=1)
    compiled = DataOperator(x, dtype="float64")
    monkeypatch.setattr(DataOperator, "compiled_sparse", False)
    torch_op = DataOperator(x, dtype="float64")
    assert torch_op._csr is None and torch_op._xt is not None
    m, r = torch.rand(30, 4, dtype=torch.float64), torch.rand(4, 500, dtype=torch.float64)
    for name in ("matmul", "rmatmul_float64"):
        arg = m if name == "matmul" else r
        torch.testing.assert_close(getattr(torch_op, name)(arg), getattr(compiled, name)(arg))
    torch.testing.assert_close(torch_op.rmatmul(r), compiled.rmatmul(r))
    torch.testing.assert_close(torch_op.times_xt(m.T.contiguous()), compiled.times_xt(m.T.contiguous()))


def test_dense_enough_small_sparse_data_get_a_dense_working_copy(monkeypatch):
    # At a quarter of the entries stored or more, a float32 dense copy takes at most twice the
    # CSR's memory and its products are BLAS calls: small such data are worked on dense.
    import scipy.sparse as sp

    from spatialfactors.models import _operator

    x = sp.random(2000, 40, density=0.3, format="csr", dtype=np.float64, random_state=2)
    x.data[:] = np.round(x.data * 8)  # exact in float32, so both precisions see the same X
    x.eliminate_zeros()
    dense = DataOperator(x.toarray(), dtype="float64")
    for dtype, rtol in (("float64", 1e-12), ("float32", 1e-5)):
        op = DataOperator(x, dtype=dtype)
        assert not op.sparse and op._csr is None and op._x.data_ptr() % 64 == 0
        np.testing.assert_array_equal(op._x.double().numpy(), x.toarray())
        m, r = torch.rand(40, 6, dtype=op.dtype), torch.rand(6, 2000, dtype=op.dtype)
        torch.testing.assert_close(op.matmul(m).double(), dense.matmul(m.double()), rtol=rtol, atol=rtol)
        torch.testing.assert_close(op.rmatmul(r).double(), dense.rmatmul(r.double()), rtol=rtol, atol=rtol)
        torch.testing.assert_close(op.col_sq_norms, dense.col_sq_norms)
    # Sparser data, or data whose dense copy would be large, stay sparse.
    assert DataOperator(sp.random(2000, 40, density=0.2, format="csr", random_state=3)).sparse
    monkeypatch.setattr(_operator, "DENSE_BYTES", 2000 * 40 * 4 - 1)
    assert DataOperator(x, dtype="float32").sparse


def test_a_dense_copy_sums_duplicate_entries():
    import scipy.sparse as sp

    x = sp.csr_matrix((np.array([1.0, 2.0, 3.0]), np.array([0, 0, 1]), np.array([0, 3, 3])), shape=(2, 2))
    assert not x.has_canonical_format
    op = DataOperator(x, dtype="float64")
    assert not op.sparse and op._x.tolist() == [[3.0, 3.0], [0.0, 0.0]]
