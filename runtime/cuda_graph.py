"""A compiled CUDA program run as ONE CUDA graph, captured once and replayed (DESIGN.md s.6).

A numba-cuda launch from Python costs ~25 us, so a program of dozens of kernels spends more
time launching than computing at the seed MLP's sizes. :class:`GraphRunner` wraps the
``run`` of ``ember.backends.cuda.compile``: inputs are copied into fixed device slots, the
program's launch sequence (``run.steps``: numba-cuda kernels on ember's stream and cuBLAS
calls whose handle's stream is that stream) writes fixed output slots, packed in one buffer,
and the fresh outputs of a call are views of one copy of that buffer (one allocation and one
copy per call, however many outputs: a training step returns every updated weight).

On the first call for a set of parameter arrays the sequence runs directly (numba compiles
its kernels, cuBLAS sets itself up); it is then captured with ``cuStreamBeginCapture`` /
``cuStreamEndCapture`` (thread-local mode; relaxed if the driver refuses; kernel by kernel,
with a warning, if both fail) and instantiated, and later calls replay it with one
``cuGraphLaunch``. The graph bakes in every pointer, so it is keyed by the parameters'
device addresses (a new set captures again; the last :data:`MAX_GRAPHS` are kept).

Under numba's CUDA simulator there are no graphs: the same slots and copies are used and the
recorded launch sequence runs again on each call, so everything but the two driver calls is
tested without a GPU. A program with a host round trip (``run.capturable`` false: a fallback
synchronises mid-run) runs directly, uncaptured.
"""
from __future__ import annotations

import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np

from ember.backends import cuda_device as cd
from ember.backends.cuda_blas import device_ptr, stream_ptr
from ember.ir.errors import EmberError

MAX_GRAPHS = 4
_ALIGN = 256  # bytes between packed output slots (cudaMalloc's alignment)


def _check(result, what: str):
    """The values of a cuda-bindings call, raising on an error code."""
    from cuda.bindings import driver
    err, *rest = result if isinstance(result, tuple) else (result,)
    if err != driver.CUresult.CUDA_SUCCESS:
        raise EmberError(f"CUDA graph: {what} failed ({err})")
    return rest[0] if len(rest) == 1 else rest


class _Replay:
    """The simulator's stand-in for a graph: the launch sequence run again."""

    def __init__(self, launch: Callable[[], None]):
        self._launch = launch

    def launch(self, stream) -> None:
        self._launch()

    def close(self) -> None:
        pass


class CudaGraph:
    """``launch()`` captured from ``stream`` into a CUDA graph and instantiated."""

    def __init__(self, launch: Callable[[], None], stream, mode: str = "THREAD_LOCAL"):
        from cuda.bindings import driver
        self._driver = driver
        self._h = driver.CUstream(stream_ptr(stream))
        mode = getattr(driver.CUstreamCaptureMode, f"CU_STREAM_CAPTURE_MODE_{mode}")
        _check(driver.cuStreamBeginCapture(self._h, mode), "cuStreamBeginCapture")
        try:
            launch()
        except BaseException:
            driver.cuStreamEndCapture(self._h)  # leave the stream usable
            raise
        self._graph = _check(driver.cuStreamEndCapture(self._h), "cuStreamEndCapture")
        self._exec = _check(driver.cuGraphInstantiate(self._graph, 0), "cuGraphInstantiate")

    def launch(self, stream) -> None:
        _check(self._driver.cuGraphLaunch(self._exec, self._h), "cuGraphLaunch")

    def close(self) -> None:
        self._driver.cuGraphExecDestroy(self._exec)
        self._driver.cuGraphDestroy(self._graph)


class GraphRunner:
    """``runner(inputs, params) -> outputs`` replaying the captured program ``run``."""

    def __init__(self, run: Callable):
        self.run = run
        self.stream = run.stream
        self._graphs: OrderedDict[tuple, tuple] = OrderedDict()
        self._slots_in: list | None = None
        self._slots_out: list | None = None
        self._lock = getattr(run, "lock", None) or threading.Lock()  # the program's own
        self._direct = False  # capture failed: run kernel by kernel
        self.captures = 0  # how many times a sequence was captured (or recorded)
        self.report = getattr(run, "report", {})

    def _slots(self, inputs: Sequence) -> tuple[list, list]:
        """Input slots, and output slots packed into one buffer (``_out_buf``) so that a
        call hands out fresh outputs with one allocation and one copy."""
        if self._slots_in is None:
            dev = self.run.device_id
            self._slots_in = [cd.empty(a.shape, a.dtype, dev) for a in inputs]
            off, layout = 0, []
            for t in self.run.output_types:
                layout.append((off, t.nbytes, np.dtype(t.dtype), t.shape))
                off += -(-max(t.nbytes, 1) // _ALIGN) * _ALIGN
            self._out_layout, self._out_buf = layout, cd.empty((max(off, 1),), np.uint8, dev)
            self._slots_out = self._unpack(self._out_buf)
        return self._slots_in, self._slots_out

    def _unpack(self, buf) -> list:
        return [buf[o:o + n].view(dt).reshape(shape) for o, n, dt, shape in self._out_layout]

    def _address(self, a) -> int:
        """Where ``a``'s data lives (the simulator's arrays are NumPy arrays inside)."""
        return a.__array_interface__["data"][0] if self.run.simulator else device_ptr(a)

    def _make(self, steps, params, slots_in, slots_out):
        """The graph of the launch sequence; None (with one warning) when the driver
        refuses to capture it in thread-local and in relaxed mode: then runs go direct."""
        launch = lambda: steps(slots_in, params, slots_out)  # noqa: E731
        if self.run.simulator:
            return _Replay(launch)
        errors = []
        for mode in ("THREAD_LOCAL", "RELAXED"):
            try:
                return CudaGraph(launch, self.stream, mode)
            except Exception as e:  # an API call the capture does not allow
                errors.append(f"{mode}: {type(e).__name__}: {e}")
        warnings.warn(f"{getattr(self.run, '__qualname__', 'cuda program')}: CUDA graph "
                      f"capture failed ({'; '.join(errors)}); running kernel by kernel",
                      RuntimeWarning, stacklevel=3)
        self._direct = True
        return None

    def __call__(self, inputs: Sequence, params: Sequence) -> list:
        run = self.run
        if self._direct or not run.capturable and not run.simulator:
            return run(inputs, params)
        ins, ps = run.check_inputs(inputs), run.check_params(params)
        with self._lock, cd.device(run.device_id):
            slots_in, slots_out = self._slots(ins)
            for slot, a in zip(slots_in, ins):
                if a.size:
                    slot.copy_to_device(a, stream=self.stream)
            key = tuple(self._address(p) if p.size else 0 for p in ps)
            graph = self._graphs.get(key)
            if graph is None:
                run.steps(slots_in, ps, slots_out)  # warm-up: compiles, sets cuBLAS up
                graph = self._make(run.steps, ps, slots_in, slots_out)
                if graph is not None:
                    self._graphs[key] = graph
                    self.captures += 1
                while len(self._graphs) > MAX_GRAPHS:
                    self._graphs.popitem(last=False)[1].close()
            else:
                self._graphs.move_to_end(key)
                graph.launch(self.stream)
            fresh = cd.empty(self._out_buf.shape, np.uint8, run.device_id)
            fresh.copy_to_device(self._out_buf, stream=self.stream)
            return self._unpack(fresh)

    def close(self) -> None:
        """Destroy the captured graphs."""
        with self._lock:
            while self._graphs:
                self._graphs.popitem()[1].close()


def graphed(run: Callable) -> Callable:
    """``run`` (a cuda backend program) as a :class:`GraphRunner` when it can be captured
    (or replayed under the simulator); unchanged otherwise."""
    if getattr(run, "capturable", False) or getattr(run, "simulator", False):
        return GraphRunner(run)
    return run
