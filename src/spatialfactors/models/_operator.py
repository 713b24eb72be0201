"""The data matrix as an operator: products with X, exact (dense or sparse) or compressed.

Every factorisation here only touches the data through ``X @ M`` and ``M @ X``, so one
class serves dense arrays, sparse matrices and the compressed form ``X ~ Q B``
(randomised range finder; Halko et al. 2011, compressed NMF of Tepper & Sapiro 2016).
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch

from . import _sparse

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_NUMPY = {torch.float32: np.float32, torch.float64: np.float64}


def to_tensor(a, dtype: torch.dtype, device: torch.device | str = "cpu") -> torch.Tensor:
    """Return ``a`` as a torch tensor of ``dtype`` on ``device``, sharing memory when it can.

    torch cannot share read-only memory (it warns and shares it anyway), and joblib hands its
    workers large inputs as read-only memory maps: a read-only ``a`` is copied instead, into
    torch's own (64-byte aligned) memory.
    """
    a = np.asarray(a)
    if a.flags.writeable:
        return torch.as_tensor(a, dtype=dtype, device=device)
    return torch.tensor(a, dtype=dtype, device=device)


def aligned_tensor(a, dtype: torch.dtype, device: torch.device | str = "cpu") -> torch.Tensor:
    """Return ``a`` as a torch tensor on a 64-byte aligned buffer, sharing memory when it can.

    MKL's results depend on the alignment of its inputs; torch allocates aligned memory, so an
    unaligned buffer (e.g. an array unpickled in a joblib or dask worker) is copied once. This
    keeps serial, multi-process and cluster runs bit-identical.
    """
    t = to_tensor(a, dtype, device)
    return t.clone() if t.data_ptr() % 64 else t


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """Return the torch dtype for ``"float32"``/``"float64"`` (or a torch dtype)."""
    if isinstance(dtype, torch.dtype):
        if dtype not in _DTYPES.values():
            raise ValueError(f"`dtype` must be float32 or float64, got {dtype}.")
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"`dtype` must be 'float32' or 'float64', got {dtype!r}.")
    return _DTYPES[dtype]


#: A sparse X with at least this fraction of entries stored is worked on as a dense copy (float32:
#: 4 bytes per entry against 8 per stored value, so at most twice the CSR's memory) ...
DENSE_FRACTION = 0.25
#: ... when that copy takes at most this many bytes (larger data stay sparse, as they came).
DENSE_BYTES = 256 * 2**20


def _densify(X, dtype: torch.dtype) -> bool:
    """Whether a sparse ``X`` is better worked on as a dense copy (see :data:`DENSE_FRACTION`)."""
    n, g = X.shape
    entries = n * g
    return entries > 0 and X.nnz >= DENSE_FRACTION * entries and entries * _NUMPY[dtype]().itemsize <= DENSE_BYTES


class DataOperator:
    """Products with a non-negative data matrix ``X`` (n_obs x n_vars).

    Parameters
    ----------
    X
        Dense array or scipy sparse matrix (one with at least :data:`DENSE_FRACTION` of its
        entries stored is copied to a dense array when that copy fits in :data:`DENSE_BYTES`).
    dtype
        Working precision.
    device
        Torch device.
    copy_unaligned
        A dense ``X`` whose buffer is not 64-byte aligned (numpy's large arrays usually are
        not) is copied once so that every product sees aligned memory (bit-identical results
        in every process). ``False`` keeps ``X`` as it is and streams it through an aligned
        block buffer in each product instead: no second copy of ``X``, for the few products
        of a compression.
    """

    _BLOCK = 4096  # rows per aligned block when streaming
    #: Sparse products on the CPU through the compiled kernels (False: torch's CSR kernels, as on a GPU).
    compiled_sparse = True

    def __init__(
        self,
        X,
        *,
        dtype: str | torch.dtype = "float32",
        device: str | torch.device = "cpu",
        copy_unaligned: bool = True,
    ):
        self.dtype = resolve_dtype(dtype)
        self.device = torch.device(device)
        self.shape = tuple(X.shape)
        self._stream = False
        self._csr = None
        if sp.issparse(X) and _densify(X, self.dtype):
            # Dense enough and small: a dense working copy (at most twice the CSR's memory) whose
            # products are BLAS calls, several times faster per stored value than the CSR kernels.
            dense = torch.zeros(self.shape, dtype=self.dtype).numpy()  # aligned (torch's allocator)
            X = sp.csr_matrix(X, dtype=dense.dtype).toarray(out=dense)  # duplicates summed; to the device below
        if sp.issparse(X):
            csr = sp.csr_matrix(X)
            if not csr.has_canonical_format:  # duplicates would be squared apart
                csr = csr.copy()
                csr.sum_duplicates()
            self.sparse = True
            if self.device.type == "cpu" and self.compiled_sparse:
                # Compiled kernels (models/_sparse.py) that stream X once per product into our
                # buffers; no transposed copy of X is kept (a third of the memory of torch's pair).
                self._csr = csr if csr.dtype == _NUMPY[self.dtype] else csr.astype(_NUMPY[self.dtype])
                self._x = self._xt = None
            else:
                self._x = _to_torch_csr(csr, self.dtype, self.device)
                self._xt = _to_torch_csr(csr.T.tocsr(), self.dtype, self.device)
            # Column sums in float64 whatever the storage type (float32 sums lose ~1e-5 at scale).
            values = csr.data.astype(np.float64)
            sq = np.bincount(csr.indices, weights=values * values, minlength=self.shape[1])
            sums = np.bincount(csr.indices, weights=values, minlength=self.shape[1])
        else:
            t = to_tensor(X, self.dtype, self.device)
            unaligned = t.data_ptr() % 64 != 0
            self._stream = unaligned and not copy_unaligned
            self._x = t.clone() if unaligned and copy_unaligned else t
            self._xt = None
            self.sparse = False
            # Accumulated in float64 over blocks of rows: no full-size float64 copy of X.
            sq = torch.zeros(self.shape[1], dtype=torch.float64, device=self.device)
            sums = torch.zeros(self.shape[1], dtype=torch.float64, device=self.device)
            for start in range(0, self.shape[0], 4096):
                block = self._x[start : start + 4096].double()
                sq += (block * block).sum(0)
                sums += block.sum(0)
            sq, sums = sq.cpu().numpy(), sums.cpu().numpy()
        #: Squared norm and sum of every column (float64, exact).
        self.col_sq_norms = torch.as_tensor(sq, dtype=torch.float64, device=self.device)
        self.col_sums = torch.as_tensor(sums, dtype=torch.float64, device=self.device)

    def _blocks(self):
        """Row blocks of ``X`` copied into one aligned buffer (streaming mode)."""
        buf = torch.empty((min(self._BLOCK, self.shape[0]), self.shape[1]), dtype=self.dtype, device=self.device)
        for start in range(0, self.shape[0], self._BLOCK):
            stop = min(start + self._BLOCK, self.shape[0])
            yield start, stop, buf[: stop - start].copy_(self._x[start:stop])

    def matmul(self, m: torch.Tensor) -> torch.Tensor:
        """``X @ m`` for ``m`` of shape (n_vars, c)."""
        if self._csr is not None:
            out = torch.empty((self.shape[0], m.shape[1]), dtype=self.dtype)
            _sparse.x_times(self._csr, m.numpy(), out.numpy())
            return out
        if self._stream:
            out = torch.empty((self.shape[0], m.shape[1]), dtype=self.dtype, device=self.device)
            for start, stop, block in self._blocks():
                out[start:stop] = block @ m
            return out
        return self._x @ m

    def rmatmul(self, m: torch.Tensor) -> torch.Tensor:
        """``m @ X`` for ``m`` of shape (c, n_obs)."""
        if self._csr is not None:
            return self._csr_rmatmul(m, self.dtype)
        if self.sparse:
            return (self._xt @ m.T).T
        if self._stream:
            m = m.contiguous()
            out = torch.zeros((m.shape[0], self.shape[1]), dtype=self.dtype, device=self.device)
            for start, stop, block in self._blocks():
                out += m[:, start:stop] @ block
            return out
        return m @ self._x

    def rmatmul_float64(self, m: torch.Tensor) -> torch.Tensor:
        """``m @ X`` in float64 (``m`` of shape (c, n_obs)), X converted block by block.

        For quantities that cancel, such as the reconstruction error from products, where the
        working precision's rounding would be magnified.
        """
        if self._csr is not None:
            return self._csr_rmatmul(m, torch.float64)
        m = m.to(torch.float64)
        if self.sparse:
            return (self._xt.to(torch.float64) @ m.T).T
        out = torch.zeros((m.shape[0], self.shape[1]), dtype=torch.float64, device=self.device)
        for start in range(0, self.shape[0], self._BLOCK):
            stop = min(start + self._BLOCK, self.shape[0])
            out += m[:, start:stop] @ self._x[start:stop].to(torch.float64)
        return out

    def _csr_rmatmul(self, m: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``m @ X`` through the compiled kernel, accumulated in ``dtype`` (the stored values are exact in it)."""
        out_t = torch.empty((self.shape[1], m.shape[0]), dtype=dtype)
        _sparse.xt_times(self._csr, m.to(dtype).numpy(), out_t.numpy())
        return out_t.T.contiguous()

    def times_xt(self, m: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``m @ X^T`` for ``m`` of shape (c, n_vars), contiguous (c, n_obs), into ``out`` if given."""
        if self._csr is not None:
            if out is None:
                out = torch.empty((m.shape[0], self.shape[0]), dtype=self.dtype)
            _sparse.times_xt(self._csr, m.numpy(), out.numpy())
            return out
        if self.sparse or self._stream:
            res = self.matmul(m.T).T
            return res.contiguous() if out is None else out.copy_(res)
        return torch.matmul(m, self._x.T, out=out)

    def compress(self, rank: int, *, n_power_iter: int = 4, seed: int = 0) -> CompressedOperator:
        """Return ``X ~ Q B`` with ``Q`` (n_obs x rank) orthonormal, by a randomised range finder."""
        gen = torch.Generator(device="cpu").manual_seed(seed)
        omega = torch.randn(self.shape[1], rank, generator=gen, dtype=self.dtype).to(self.device)
        q = torch.linalg.qr(self.matmul(omega)).Q
        for _ in range(n_power_iter):
            z = torch.linalg.qr(self.rmatmul(q.T).T).Q
            q = torch.linalg.qr(self.matmul(z)).Q
        b = self.rmatmul(q.T)
        return CompressedOperator(q, b, self.col_sq_norms, self.col_sums, self.shape)


class CompressedOperator:
    """``X ~ Q B`` with orthonormal ``Q`` (n_obs x r) and ``B = Q^T X`` (r x n_vars)."""

    sparse = False

    def __init__(self, q: torch.Tensor, b: torch.Tensor, col_sq_norms, col_sums, shape):
        self.q, self.b = q, b
        self.dtype, self.device = q.dtype, q.device
        self.col_sq_norms, self.col_sums, self.shape = col_sq_norms, col_sums, tuple(shape)

    def matmul(self, m: torch.Tensor) -> torch.Tensor:
        """``Q (B m)``."""
        return self.q @ (self.b @ m)

    def rmatmul(self, m: torch.Tensor) -> torch.Tensor:
        """``(m Q) B``."""
        return (m @ self.q) @ self.b

    def times_xt(self, m: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``(m B^T) Q^T``, into ``out`` if given."""
        return torch.matmul(m @ self.b.T, self.q.T, out=out)

    def ordered(self) -> CompressedOperator:
        """Return the same ``Q B`` in the basis of the singular vectors of ``B`` (largest first).

        Then ``Q[:, :l] B[:l]`` is the best rank-``l`` approximation within ``range(Q)``.
        """
        u, s, vt = torch.linalg.svd(self.b, full_matrices=False)
        return CompressedOperator(self.q @ u, s[:, None] * vt, self.col_sq_norms, self.col_sums, self.shape)

    def truncate(self, rank: int) -> CompressedOperator:
        """Keep the first ``rank`` basis vectors (meaningful after :meth:`ordered`)."""
        q, b = self.q[:, :rank].contiguous(), self.b[:rank].contiguous()
        return CompressedOperator(q, b, self.col_sq_norms, self.col_sums, self.shape)

    def relative_error(self, exact: DataOperator) -> float:
        """``||X - Q B||_F / ||X||_F``, computed without forming ``Q B``."""
        total = float(exact.col_sq_norms.sum())
        # ||X - QB||^2 = ||X||^2 - ||B||^2 because Q is orthonormal and B = Q^T X.
        captured = float((self.b.double() ** 2).sum())
        return float(np.sqrt(max(total - captured, 0.0) / total)) if total > 0 else 0.0


def _to_torch_csr(m: sp.csr_matrix, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if not m.has_sorted_indices:  # a sorted copy: the caller's matrix may be read-only (or the user's)
        m = m.sorted_indices()
    with warnings.catch_warnings():  # torch flags sparse CSR as beta; products with dense are what we use
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state", category=UserWarning)
        return torch.sparse_csr_tensor(
            to_tensor(m.indptr, torch.int64),
            to_tensor(m.indices, torch.int64),
            aligned_tensor(m.data, dtype),
            size=m.shape,
            check_invariants=False,  # scipy's CSR is valid; explicit, else torch warns that checks are off
        ).to(device)
