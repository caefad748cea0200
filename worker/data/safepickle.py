"""A pickle *reader* for data files: plain values and numeric numpy arrays, nothing else.

CIFAR-10's "python version" batches are pickles, and unpickling runs whatever the file says:
even a restricted :class:`pickle.Unpickler` that only allows numpy's reconstructors hands the
file ``numpy.ndarray(shape)`` (an uninitialised allocation of any size) and object arrays.
So this module never unpickles: it interprets the opcodes itself, builds only ``None``,
bools, ints, floats, ``str``, ``bytes``, lists, tuples and dicts, and turns the handful of
numpy globals a pickled array uses into plain data:

* ``numpy[._core|.core].multiarray._reconstruct(ndarray, (0,), b"b")`` + ``BUILD`` with
  ``(version, shape, dtype, fortran, data)``, ``numpy[._core|.core].numeric._frombuffer(data,
  dtype, shape, order)`` and ``numpy[._core|.core].multiarray.scalar(dtype, data)``: the data must
  hold exactly ``prod(shape) × itemsize`` bytes, and the array is ``np.frombuffer`` of them;
* ``numpy.dtype(descr, align, copy)``: a plain numeric type only (``u1``…``f8``, ``b1``; no
  objects, strings, records or sub-arrays);
* ``_codecs.encode(text, "latin1")``: how Python 3 writes bytes in protocol 2.

Any other global is refused ("forbidden global …"), as is every opcode that could call code
(``INST``, ``OBJ``, ``NEWOBJ``, ``PERSID``, extensions…). Work and memory are bounded by the
input: each object comes from at least one opcode byte and their number is capped
(:data:`MAX_OBJECTS`); integers are at most 16 bytes long; array data are slices of the input.
"""
from __future__ import annotations

import reprlib
import struct

import numpy as np

MAX_OBJECTS = 2_000_000   # values built from one file (a CIFAR batch: about 20 000)
MAX_NDIM = 8
_NUMERIC = {"b1", "u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f2", "f4", "f8"}
_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric", "numpy._core.numeric")


class PickleRefused(ValueError):
    """The input is not a pickle of plain data and numeric arrays (or is truncated/corrupt)."""


class _Global:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"<global {self.name}>"


class _DType:
    """A numeric dtype under construction (``BUILD`` may set its byte order)."""

    def __init__(self, descr: str):
        self.descr, self.order = descr, "|" if descr in ("b1", "u1", "i1") else "<"

    def numpy(self) -> np.dtype:
        return np.dtype(self.order.replace("|", "=") + self.descr)


class _PendingArray:
    """``_reconstruct(ndarray, (0,), b"b")``: an array that the next ``BUILD`` gives its data;
    ``memo_keys`` are where it was memoised meanwhile (they then get the array)."""

    def __init__(self):
        self.memo_keys: list[int] = []


_GLOBALS = {("_codecs", "encode"), ("numpy", "dtype"), ("numpy", "ndarray")}
_GLOBALS |= {(m, n) for m in _NUMPY_MODULES if m.endswith("multiarray") for n in ("_reconstruct", "scalar")}
_GLOBALS |= {(m, "_frombuffer") for m in _NUMPY_MODULES if m.endswith("numeric")}


def _array(data, dtype, shape, fortran: bool) -> np.ndarray:
    if not isinstance(dtype, _DType):
        raise PickleRefused(f"array dtype must be a numeric numpy dtype, got {type(dtype).__name__}")
    if isinstance(data, str):
        data = data.encode("latin1")  # protocol-2 pickles of Python 2 strings, decoded as latin1
    if not isinstance(data, (bytes, bytearray)):
        raise PickleRefused(f"array data must be bytes, got {type(data).__name__}")
    if (not isinstance(shape, tuple) or len(shape) > MAX_NDIM
            or not all(type(d) is int and d >= 0 for d in shape)):
        raise PickleRefused(f"array shape must be a tuple of at most {MAX_NDIM} non-negative ints, got {shape!r}")
    dt = dtype.numpy()
    count = 1
    for d in shape:
        count *= d
    if count * dt.itemsize != len(data):
        raise PickleRefused(f"array of shape {shape} and dtype {dt} needs {count * dt.itemsize} bytes, "
                            f"the pickle holds {len(data)}")
    return np.frombuffer(bytearray(data), dtype=dt).reshape(shape, order="F" if fortran else "C")


def _text(value):
    """Python 2 pickles read with byte strings give b"u1" where Python 3 ones give "u1"."""
    return value.decode("latin1") if isinstance(value, bytes) else value


def _call(func: _Global, args):
    if not isinstance(func, _Global) or not isinstance(args, tuple):
        raise PickleRefused(f"REDUCE on {type(func).__name__} is not allowed")
    module, name = func.name.rsplit(".", 1)
    if name == "encode" and module == "_codecs":
        if len(args) == 2 and isinstance(args[0], str) and args[1] in ("latin1", "latin-1"):
            return args[0].encode("latin1")
    elif name == "dtype":
        descr = _text(args[0]) if args else None
        if 1 <= len(args) <= 3 and isinstance(descr, str) and descr.lstrip("<>|=") in _NUMERIC:
            return _DType(descr.lstrip("<>|="))
        raise PickleRefused(f"numpy dtype {args[:1]!r} is not a plain numeric type")
    elif name == "_reconstruct":
        if len(args) == 3 and isinstance(args[0], _Global) and args[0].name == "numpy.ndarray" \
                and args[1] == (0,) and args[2] in (b"b", "b"):
            return _PendingArray()
    elif name == "_frombuffer":
        if len(args) == 4 and _text(args[3]) in ("C", "F"):
            return _array(args[0], args[1], args[2], _text(args[3]) == "F")
    elif name == "scalar":
        if len(args) == 2:
            return _array(args[1], args[0], (), False)[()]
    raise PickleRefused(f"call {func.name}{_brief(args)} is not allowed")


def _brief(args) -> str:
    return reprlib.repr(args)  # bounded, however large the arguments


def _build(obj, state):
    if isinstance(obj, _DType):
        if not (isinstance(state, tuple) and len(state) in (8, 9) and _text(state[1]) in ("<", ">", "|", "=")
                and state[2:5] == (None, None, None)):
            raise PickleRefused(f"numpy dtype state {_brief(state)} is not a plain numeric type")
        obj.order = _text(state[1])
        return obj
    if isinstance(obj, _PendingArray):
        if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1):
            raise PickleRefused(f"numpy array state {_brief(state)} is not supported")
        return _array(state[4], state[2], state[1], bool(state[3]))
    raise PickleRefused(f"BUILD on {type(obj).__name__} is not allowed")


def _check_plain(obj) -> None:
    """Everything reachable from ``obj`` is data (each object visited once: shared references
    cost nothing, however often they repeat)."""
    seen: set[int] = set()
    todo = [obj]
    while todo:
        item = todo.pop()
        if isinstance(item, (_PendingArray, _Global, _DType)):
            raise PickleRefused(f"{type(item).__name__.strip('_')} left in the data (not a plain value)")
        if isinstance(item, (list, tuple, dict)) and id(item) not in seen:
            seen.add(id(item))
            if isinstance(item, dict):  # keys and values themselves: no temporary (k, v) pairs
                todo.extend(item.keys())
                todo.extend(item.values())
            else:
                todo.extend(item)


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = memoryview(data), 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise PickleRefused("pickle data was truncated")
        out = self.data[self.pos:self.pos + n].tobytes()
        self.pos += n
        return out

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "little")

    def line(self) -> str:
        end = bytes(self.data[self.pos:self.pos + 256]).find(b"\n")
        if end < 0:
            raise PickleRefused("pickle data was truncated (a GLOBAL name)")
        return self.take(end + 1)[:-1].decode("ascii", errors="replace")


def loads(data: bytes):
    """The plain value pickled in ``data`` (dicts, lists, tuples, str, bytes, numbers, numeric
    numpy arrays). Raises :class:`PickleRefused` for anything else."""
    try:
        return _loads(data)
    except PickleRefused:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. a list as a dict key, an array compared to (0,)
        raise PickleRefused(f"malformed pickle ({type(exc).__name__}: {reprlib.repr(str(exc))})") from None


def _loads(data: bytes):
    r = _Reader(data)
    stack: list = []
    marks: list[int] = []
    memo: dict[int, object] = {}
    made = 0

    def pop_mark() -> list:
        if not marks:
            raise PickleRefused("MARK missing")
        start = marks.pop()
        items = stack[start:]
        del stack[start:]
        return items

    def push(value) -> None:
        nonlocal made
        made += 1
        if made > MAX_OBJECTS:
            raise PickleRefused(f"more than {MAX_OBJECTS} values")
        stack.append(value)

    def top():
        if not stack:
            raise PickleRefused("stack underflow")
        return stack[-1]

    while True:
        op = r.take(1)
        if op == b"\x80":                      # PROTO
            if r.uint(1) > 5:
                raise PickleRefused("unsupported pickle protocol")
        elif op == b"\x95":                    # FRAME
            r.take(8)
        elif op == b".":                       # STOP
            if len(stack) != 1 or marks:
                raise PickleRefused("pickle ends with a malformed stack")
            _check_plain(stack[0])
            return stack[0]
        elif op == b"(":
            marks.append(len(stack))
        elif op == b"0":
            top()
            stack.pop()
        elif op == b"1":
            pop_mark()
        elif op == b"2":
            push(top())
        elif op == b"N":
            push(None)
        elif op in (b"\x88", b"\x89"):
            push(op == b"\x88")
        elif op == b"J":
            push(struct.unpack("<i", r.take(4))[0])
        elif op == b"K":
            push(r.uint(1))
        elif op == b"M":
            push(r.uint(2))
        elif op in (b"\x8a", b"\x8b"):          # LONG1, LONG4
            n = r.uint(1 if op == b"\x8a" else 4)
            if n > 16:
                raise PickleRefused(f"integer of {n} bytes")
            push(int.from_bytes(r.take(n), "little", signed=True))
        elif op == b"G":
            push(struct.unpack(">d", r.take(8))[0])
        elif op in (b"T", b"U", b"B", b"C", b"\x8e", b"\x96"):   # byte strings
            n = r.uint({b"T": 4, b"U": 1, b"B": 4, b"C": 1, b"\x8e": 8, b"\x96": 8}[op])
            if op == b"T" and n >= 1 << 31:
                raise PickleRefused("negative BINSTRING length")
            raw = r.take(n)
            push(bytearray(raw) if op == b"\x96" else raw)
        elif op in (b"X", b"\x8c", b"\x8d"):    # unicode strings
            n = r.uint({b"X": 4, b"\x8c": 1, b"\x8d": 8}[op])
            try:
                push(r.take(n).decode("utf-8", "surrogatepass"))
            except UnicodeDecodeError as exc:
                raise PickleRefused(f"bad UTF-8 in a string ({exc.reason})") from None
        elif op == b"}":
            push({})
        elif op == b"]":
            push([])
        elif op == b")":
            push(())
        elif op == b"d":
            items = pop_mark()
            if len(items) % 2:
                raise PickleRefused("DICT with an odd number of items")
            push(dict(zip(items[::2], items[1::2])))
        elif op == b"l":
            push(pop_mark())
        elif op == b"t":
            push(tuple(pop_mark()))
        elif op in (b"\x85", b"\x86", b"\x87"):
            n = op[0] - 0x84
            if len(stack) < n:
                raise PickleRefused("stack underflow")
            items = tuple(stack[len(stack) - n:])
            del stack[len(stack) - n:]
            push(items)
        elif op in (b"s", b"u"):                # SETITEM, SETITEMS
            if op == b"s":
                if len(stack) < 3:
                    raise PickleRefused("stack underflow")
                items = stack[-2:]
                del stack[-2:]
            else:
                items = pop_mark()
            target = top()
            if not isinstance(target, dict) or len(items) % 2:
                raise PickleRefused("SETITEM(S) on something that is not a dict")
            for k, v in zip(items[::2], items[1::2]):
                target[k] = v
        elif op in (b"a", b"e"):                # APPEND, APPENDS
            if op == b"a":
                if len(stack) < 2:
                    raise PickleRefused("stack underflow")
                items = [stack.pop()]
            else:
                items = pop_mark()
            target = top()
            if not isinstance(target, list):
                raise PickleRefused("APPEND(S) on something that is not a list")
            target.extend(items)
        elif op in (b"q", b"r", b"\x94"):        # BINPUT, LONG_BINPUT, MEMOIZE
            key = len(memo) if op == b"\x94" else r.uint(1 if op == b"q" else 4)
            if len(memo) >= MAX_OBJECTS:
                raise PickleRefused("memo too large")
            memo[key] = top()
            if isinstance(memo[key], _PendingArray):
                memo[key].memo_keys.append(key)
        elif op in (b"h", b"j"):                # BINGET, LONG_BINGET
            key = r.uint(1 if op == b"h" else 4)
            if key not in memo:
                raise PickleRefused(f"memo key {key} missing")
            push(memo[key])
        elif op in (b"c", b"\x93"):             # GLOBAL, STACK_GLOBAL
            if op == b"c":
                module, name = r.line(), r.line()
            else:
                if len(stack) < 2 or not all(isinstance(s, str) for s in stack[-2:]):
                    raise PickleRefused("STACK_GLOBAL needs two strings")
                module, name = stack[-2], stack[-1]
                del stack[-2:]
            if (module, name) not in _GLOBALS:
                raise PickleRefused(f"forbidden global {module}.{name}")
            push(_Global(f"{module}.{name}"))
        elif op == b"R":
            if len(stack) < 2:
                raise PickleRefused("stack underflow")
            args = stack.pop()
            func = stack.pop()
            push(_call(func, args))
        elif op == b"b":
            if len(stack) < 2:
                raise PickleRefused("stack underflow")
            state = stack.pop()
            obj = stack[-1]
            stack[-1] = _build(obj, state)
            if isinstance(obj, _PendingArray):  # memo entries made before BUILD get the array
                for key in obj.memo_keys:
                    if memo.get(key) is obj:
                        memo[key] = stack[-1]
        else:
            raise PickleRefused(f"pickle opcode {op!r} at byte {r.pos - 1} is not allowed in a data file")
