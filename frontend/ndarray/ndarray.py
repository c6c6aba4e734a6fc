"""The eager NDArray and the one dispatch path every op goes through.

``invoke(op, inputs, attrs)`` runs a registry op's NumPy kernel on NDArrays: no shape rule
runs on the fast path; when the kernel fails, the op's rule (or the kernel's message) is
re-raised as an ``MXNetError`` naming the op and the shapes. When autograd is recording the
call is put on the tape.
"""
from __future__ import annotations

import numpy as np

from ember import autograd as _ag
from ember.context import Context, check_device, current_context
from ember.ir import EmberError, ShapeError
from ember.ir.errors import DTypeError, fmt_shapes
from ember.ir.types import TensorType

from . import compiled_ops as _eager

py_slice = slice
_DEFAULT = np.dtype(np.float32)
# MXNet's storage-type codes; ember stores every array densely
_STORAGE_TYPE_UNDEFINED, _STORAGE_TYPE_DEFAULT = -1, 0
_STORAGE_TYPE_ROW_SPARSE, _STORAGE_TYPE_CSR = 1, 2
_STORAGE_TYPE_STR_TO_ID = {"undefined": -1, "default": 0, "row_sparse": 1, "csr": 2}
_STORAGE_TYPE_ID_TO_STR = {v: k for k, v in _STORAGE_TYPE_STR_TO_ID.items()}
# set once the first GPU array exists (ndarray/device.py): until then no dispatch looks for
# device storage, so CPU-only programs pay nothing for GPU support
_GPU_IN_USE = False


class NDArray:
    """An n-dimensional array on a context (MXNet's ``mx.nd.NDArray``)."""

    __slots__ = ("_data", "_ctx", "_grad", "_grad_req", "_node", "_fresh_grad", "__weakref__")
    __array_priority__ = 1000.0  # NumPy defers `np_array + nd_array` to us

    def __init__(self, data: np.ndarray, ctx: Context | None = None, _node=None):
        self._data = data
        self._ctx = ctx
        self._grad = None
        self._grad_req = "null"
        self._node = _node
        self._fresh_grad = False

    # ---- properties --------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self._data.shape

    @property
    def dtype(self):
        return self._data.dtype.type

    @property
    def size(self) -> int:
        return self._data.size

    @property
    def ndim(self) -> int:
        return self._data.ndim

    @property
    def context(self) -> Context:
        return self._ctx or current_context()

    ctx = context

    @property
    def stype(self) -> str:
        return "default"

    @property
    def grad(self):
        return self._grad

    @property
    def grad_req(self) -> str:
        return self._grad_req

    @property
    def handle(self):
        return self._data

    @property
    def writable(self) -> bool:
        return self._data.flags.writeable if type(self._data) is np.ndarray else True

    @property
    def T(self):
        if self.ndim > 2:
            raise ValueError("Only 2D matrix is allowed to be transposed")
        return self.transpose()

    # ---- conversion --------------------------------------------------------------------
    def asnumpy(self) -> np.ndarray:
        """A NumPy copy of the data (copied from the device for a GPU array)."""
        if _GPU_IN_USE and type(self._data) is not np.ndarray:
            from .device import host
            return host(self._data)
        return np.array(self._data, copy=True)

    def asscalar(self):
        """The value of a size-1 array as a NumPy scalar."""
        if self.shape != (1,) and self.size != 1:
            raise ValueError("The current array is not a scalar")
        return self.asnumpy().reshape(())[()]

    def astype(self, dtype, copy: bool = True):
        """Cast to ``dtype``; ``copy=False`` returns ``self`` when it already has it."""
        if not copy and np.dtype(dtype) == self._data.dtype:
            return self
        return _invoke_name("cast", [self], {"dtype": np.dtype(dtype).name})

    def copy(self):
        """A deep copy on the same context."""
        return self.copyto(self.context)

    def copyto(self, other):
        """Copy into NDArray ``other`` (returned) or onto a new array on Context ``other``."""
        if isinstance(other, NDArray):
            if other is self:
                return self
            if other.shape != self.shape:
                raise ShapeError(f"copyto: shape mismatch {fmt_shapes([self.shape, other.shape])}")
            if _GPU_IN_USE:
                from .device import assign
                assign(other._data, self._data)
            else:
                other._data[...] = self._data
            return other
        if isinstance(other, Context):
            if _GPU_IN_USE or other.device_type == "gpu":
                from .device import copy_to
                return copy_to(self, other)
            return NDArray(self._data.copy(), check_device(other))
        raise TypeError(f"copyto does not support type {type(other)}")

    def as_in_context(self, context: Context):
        """``self`` when already on ``context``, else a copy there."""
        return self if self.context == context else self.copyto(context)

    as_in_ctx = as_in_context

    def wait_to_read(self):
        """Wait for the device work producing this array (eager NumPy work is finished when
        the call returns)."""
        if _GPU_IN_USE and type(self._data) is not np.ndarray:
            from .device import synchronize
            synchronize(self._data)

    def wait_to_write(self):
        """See :meth:`wait_to_read`."""

    def detach(self):
        """The same data, cut off from the autograd graph."""
        return NDArray(self._data, self._ctx)

    def attach_grad(self, grad_req: str = "write", stype=None):
        """Allocate a gradient buffer; autograd writes (or adds) this array's gradient there."""
        if _GPU_IN_USE and type(self._data) is not np.ndarray:
            from .device import zeros_like
            grad = NDArray(zeros_like(self._data), self._ctx)
        else:
            grad = NDArray(np.zeros_like(self._data), self._ctx)
        _ag.mark_variables([self], [grad], grad_req)

    def backward(self, out_grad=None, retain_graph: bool = False, train_mode: bool = True):
        """Compute the gradient of this array w.r.t. the marked variables."""
        _ag.backward([self], None if out_grad is None else [out_grad], retain_graph, train_mode)

    def tostype(self, stype):
        if stype != "default":
            raise EmberError(f"storage type {stype!r} is not supported; ember is dense only")
        return self

    def __array__(self, dtype=None, copy=None):
        if _GPU_IN_USE and type(self._data) is not np.ndarray:
            data = self.asnumpy()
            return data if dtype is None else data.astype(dtype)
        return self._data if dtype is None else self._data.astype(dtype)

    def __len__(self):
        return self.shape[0]

    def __iter__(self):
        for i in range(self.shape[0]):
            yield self[i]

    def __bool__(self):
        if self.size == 1:
            return bool(self.asnumpy().reshape(-1)[0])
        if self.size == 0:
            return False
        raise ValueError("The truth value of an NDArray with multiple elements is ambiguous.")

    def __repr__(self):
        data = self._data if type(self._data) is np.ndarray else self.asnumpy()
        return f"\n{data}\n<NDArray {'x'.join(map(str, self.shape))} @{self.context}>"

    def __hash__(self):
        return id(self)


# ---- dispatch --------------------------------------------------------------------------
def invoke(op, inputs, attrs: dict, out=None, ctx=None):
    """Run ``op`` eagerly: the single path of ``nd.*``, NDArray methods and operators."""
    datas = [x._data for x in inputs]
    if _GPU_IN_USE and any(type(d) is not np.ndarray for d in datas):
        from .device import invoke_device
        res = invoke_device(op, inputs, datas, attrs, out)
        if res is not NotImplemented:
            return res
    if len(datas) > 1:
        dt = datas[0].dtype
        for d in datas:
            if d.dtype != dt:  # mixed dtypes: the op's rule says whether it takes them
                _check_dtypes(op, datas, attrs)
                break
    if op.mode:
        attrs = {**attrs, "is_train": _ag._STATE.training}
    try:
        res = _eager.run(op, datas, attrs) if op.name in _eager.EAGER_OPS else None
        if res is None:
            res = op.compute(datas, attrs)
    except EmberError:
        raise
    except Exception as e:  # a NumPy complaint becomes the op's own error
        raise _op_error(op, inputs, attrs, e) from None
    if inputs:
        ctx = inputs[0]._ctx
    else:  # a creation op: its device must be one ember can use
        dev = check_device(ctx or current_context())
        if dev.device_type == "gpu":
            from .device import gpu_creation
            return gpu_creation(op, res, attrs, dev, out)
    if isinstance(res, tuple | list):
        outs = [NDArray(_own(r, datas), ctx) for r in res]
    else:
        outs = [NDArray(_own(res, datas), ctx)]
    if _ag._STATE.recording:
        _ag._record(op, attrs, inputs, outs)
    if op.visible_outputs is not None:
        outs = outs[:op.n_visible(attrs)]
    if out is not None:
        return _write_out(op, outs, out)
    return outs[0] if len(outs) == 1 else outs


_DTYPES_OK: set = set()  # (op, input dtypes) whose rule accepts the mix (index inputs)


def _check_dtypes(op, datas, attrs):
    """Raise the rule's DTypeError when ``op`` may not mix its inputs' dtypes (MXNet never
    converts them: uint8 data into a float32 Dense is an error, not 200 * 3 mod 256)."""
    key = (op.name, tuple(d.dtype.name for d in datas))
    if key in _DTYPES_OK:
        return
    try:
        op.infer([TensorType(d.shape, d.dtype) for d in datas], attrs)
    except DTypeError:
        raise
    except Exception:  # a shape complaint: the kernel reports it in its own words
        return
    _DTYPES_OK.add(key)


def _own(r, datas):
    """The kernel's result as an array that shares no memory with the inputs (ops return new
    arrays in MXNet; only methods such as ``reshape`` make views on purpose)."""
    if type(r) is not np.ndarray:
        return np.asarray(r)
    if r.base is not None:
        for d in datas:
            if np.may_share_memory(r, d):
                return r.copy()
    return r


def _write_out(op, outs, out):
    targets = out if isinstance(out, list | tuple) else [out]
    for t, o in zip(targets, outs):
        if t.shape != o.shape:
            raise ShapeError(f"{op.name}: out= has shape {t.shape}, result has {o.shape}")
        if type(t._data) is np.ndarray:
            t._data[...] = o._data
        else:
            from .device import assign
            assign(t._data, o._data)
        t._node = o._node
    return out


def _op_error(op, inputs, attrs, exc):
    """The clearest error for a failed kernel: the op's shape rule, else NumPy's words."""
    types = [TensorType(x.shape, x._data.dtype) for x in inputs]
    try:
        op.infer(types, attrs)
    except EmberError as e:
        return e
    except Exception:
        pass
    return EmberError(f"{op.name}: failed on input shapes {fmt_shapes([t.shape for t in types])}"
                      f" with {_attr_text(attrs)}: {exc}")


def _attr_text(attrs):
    return "{" + ", ".join(f"{k}={v}" for k, v in attrs.items() if k != "is_train") + "}"


_op_cache: dict = {}


def _invoke_name(name, inputs, attrs, out=None):
    from ember.ir import get_op
    from ember.ir.ops import normalize_attrs
    op = _op_cache.get(name) or _op_cache.setdefault(name, get_op(name))
    return invoke(op, inputs, normalize_attrs(op, attrs), out=out)


# ---- creation ----------------------------------------------------------------------------
def _dtype_of(source, dtype):
    if dtype is not None:
        return np.dtype(dtype)
    if isinstance(source, NDArray):
        return source._data.dtype
    if isinstance(source, np.ndarray):
        return source.dtype if source.dtype != np.float64 else _DEFAULT
    return _DEFAULT


def array(source_array, ctx: Context | None = None, dtype=None) -> NDArray:
    """A new NDArray from a NumPy array, NDArray, list or scalar (float32 by default)."""
    dt = _dtype_of(source_array, dtype)
    if isinstance(source_array, NDArray):
        source_array = source_array.asnumpy() if _GPU_IN_USE else source_array._data
    try:
        data = np.array(source_array, dtype=dt, copy=True)
    except (ValueError, TypeError) as e:
        raise EmberError(f"nd.array: {_bad_source(source_array, dt, e)}") from None
    if data.dtype.kind not in "biuf":
        raise EmberError(f"nd.array: an NDArray holds numbers or booleans, not {data.dtype} "
                         f"({_show(source_array)})")
    dev = check_device(ctx or current_context())
    if dev.device_type == "gpu":
        from .device import place
        return NDArray(place(data, dev), dev)
    return NDArray(data, ctx)


def _show(x, limit: int = 50) -> str:
    s = repr(x)
    return s if len(s) <= limit else s[:limit - 3] + "..."


def _bad_source(src, dtype, exc) -> str:
    """Why ``src`` makes no array: the first ragged row or non-numeric item, by position."""
    def walk(x, where):
        if isinstance(x, str | bytes) or not isinstance(x, list | tuple | np.ndarray):
            return None
        lens = [len(y) if isinstance(y, list | tuple | np.ndarray) and not isinstance(y, str)
                else None for y in x]
        for i, n in enumerate(lens):
            if n != lens[0]:
                size = lambda k: "a scalar" if lens[k] is None else f"length {lens[k]}"  # noqa
                return (f"the nested sequence is ragged: item {where}[{i}] has {size(i)} but "
                        f"item {where}[0] has {size(0)}; an NDArray needs every row of one "
                        "length (pad them, or make one array per row)")
        for i, y in enumerate(x):
            found = walk(y, f"{where}[{i}]")
            if found:
                return found
        return None

    def first_bad(x, where):
        if isinstance(x, list | tuple):
            for i, y in enumerate(x):
                found = first_bad(y, f"{where}[{i}]")
                if found:
                    return found
            return None
        try:
            np.array(x, dtype=dtype)
            return None
        except (ValueError, TypeError):
            return f"{'item ' + where if where else 'the source'} {_show(x)} is not a real number"

    reason = walk(src, "") or first_bad(src, "")
    if reason:
        return f"cannot make a {np.dtype(dtype).name} array: {reason}"
    return f"cannot make a {np.dtype(dtype).name} array from {_show(src)}: {exc}"


def empty(shape, ctx: Context | None = None, dtype=None, stype=None) -> NDArray:
    """An uninitialised array (zeros in ember: NumPy gives them as cheaply)."""
    if stype not in (None, "default"):
        raise EmberError(f"empty: storage type {stype!r} is not supported; ember stores "
                         "arrays densely")
    shape = (shape,) if isinstance(shape, int | np.integer) else tuple(shape)
    data = np.zeros(shape, dtype=np.dtype(dtype or _DEFAULT))
    dev = check_device(ctx or current_context())
    if dev.device_type == "gpu":
        from .device import place
        return NDArray(place(data, dev), dev)
    return NDArray(data, ctx)


def waitall():
    """Wait for all pending work: the GPUs' streams (eager NumPy work has none)."""
    if _GPU_IN_USE:
        from ember.backends import cuda_device
        for i in range(cuda_device.device_count()):
            cuda_device.synchronize(i)
