"""One onnxruntime Run over arrays bound once (IO binding): the decode loop's fast path.

A step then allocates nothing and converts nothing: onnxruntime reads the bound input
arrays and writes the bound output arrays in place. `BoundRun` owns those arrays, because
onnxruntime holds raw pointers into them (a freed buffer corrupts the heap).
"""

from __future__ import annotations

from functools import partial

import numpy as np
import onnxruntime as ort


class BoundRun:
    """`bound.run()` runs `session` on `inputs`, writing into `outputs` (name -> array).

    The run goes through the session's C-level entry point where the installed onnxruntime
    has one (measured: 15% of a step of the default model is the public method's Python
    frame); `fast=False`, or an onnxruntime without it, takes the public
    `run_with_iobinding`, with the same results.
    """

    def __init__(
        self,
        session: ort.InferenceSession,
        inputs: dict[str, np.ndarray],
        outputs: dict[str, np.ndarray],
        *,
        fast: bool = True,
    ) -> None:
        self.inputs, self.outputs = inputs, outputs  # alive as long as this object is
        io = session.io_binding()
        for name, arr in inputs.items():
            io.bind_input(name, "cpu", 0, arr.dtype, list(arr.shape), arr.ctypes.data)
        for name, arr in outputs.items():
            io.bind_output(name, "cpu", 0, arr.dtype, list(arr.shape), arr.ctypes.data)
        self._io = io
        inner = getattr(session, "_sess", None)
        self.fast = (
            fast
            and inner is not None
            and hasattr(inner, "run_with_iobinding")
            and hasattr(io, "_iobinding")
        )
        if self.fast:
            self.run = partial(inner.run_with_iobinding, io._iobinding, ort.RunOptions())
        else:
            self.run = partial(session.run_with_iobinding, io)
