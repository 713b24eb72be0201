"""Thread control for torch work made of many small operations."""

from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def one_thread():
    """Run the enclosed torch work on one thread.

    BLAS results then do not depend on how many threads or workers run, so serial, joblib and
    dask runs are bit-identical; and small batched operations avoid the cost of waking (or
    waiting for) a second thread, which on a busy machine is larger than the work itself.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
