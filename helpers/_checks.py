"""Argument checks shared by every public helper.

Each check raises ``TypeError`` (wrong kind of object) or ``ValueError`` (right kind, wrong
shape, range or content) with a message of the form

    "<argument> must be <what is needed>; got <what was passed>"

so that a reader who passes a bad value learns which argument, what it was and what it should
be, instead of a traceback from inside JAX. The checks return the converted value, so a public
function reads ``x = _checks.array(x, "x", ndim=2)`` and continues with a NumPy array.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, Iterable, Sequence

import jax
import numpy as np

__all__ = [
    "array",
    "square",
    "symmetric",
    "same_shape",
    "integer",
    "real",
    "choice",
    "boolean",
    "function",
    "params_tree",
    "finite_tree",
    "rng_key",
    "describe",
]


def describe(value: Any) -> str:
    """A short description of ``value`` for an error message (type, shape and dtype)."""
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"{type(value).__name__} of shape {tuple(value.shape)} and dtype {value.dtype}"
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__} of length {len(value)}"
    if isinstance(value, (bool, numbers.Number, str)) or value is None:
        return f"{value!r} ({type(value).__name__})"
    return type(value).__name__


_KINDS = {
    "float": ("f",),
    "real": ("f", "i", "u"),  # real numbers; integers are converted
    "int": ("i", "u"),
    "bool": ("b",),
    "any": None,
}


def array(
    x: Any,
    name: str,
    *,
    ndim: int | Sequence[int] | None = None,
    shape: Sequence[int | None] | None = None,
    kind: str = "real",
    finite: bool = True,
    nonempty: bool = True,
    min_len: int | None = None,
) -> np.ndarray:
    """``x`` as a NumPy array, checked.

    Args:
        x: array-like (lists are accepted; strings and dicts are not).
        name: the argument's name, used in the message.
        ndim: required number of axes (an int, or several allowed).
        shape: required shape; ``None`` entries match any size.
        kind: ``"float"`` (floating point only), ``"real"`` (floats or integers, converted to
            float64 when integer), ``"int"``, ``"bool"`` or ``"any"``.
        finite: reject NaN and inf.
        nonempty: reject arrays with a zero-sized axis.
        min_len: minimum size of the first axis.
    """
    if isinstance(x, (str, bytes, dict)) or x is None or callable(x) and not hasattr(x, "shape"):
        raise TypeError(f"{name} must be an array; got {describe(x)}")
    try:
        arr = np.asarray(x)
    except Exception as err:  # ragged lists and the like
        raise TypeError(f"{name} must be an array (a rectangular nest of numbers); got {describe(x)}") from err
    if arr.dtype == object:
        raise TypeError(f"{name} must be a numeric array; got an array of Python objects ({describe(x)})")
    allowed = _KINDS[kind]
    if allowed is not None and arr.dtype.kind not in allowed:
        want = {"float": "a floating-point", "real": "a real (float or integer)", "int": "an integer", "bool": "a boolean"}[kind]
        raise TypeError(f"{name} must be {want} array; got dtype {arr.dtype}")
    if kind == "real" and arr.dtype.kind in "iu":
        arr = arr.astype(np.float64)
    if ndim is not None:
        allowed_ndim = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed_ndim:
            want = " or ".join(str(d) for d in allowed_ndim)
            raise ValueError(f"{name} must have {want} axes; got shape {arr.shape}")
    if shape is not None:
        ok = arr.ndim == len(shape) and all(s is None or s == a for s, a in zip(shape, arr.shape))
        if not ok:
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name} must have shape {want}; got {arr.shape}")
    if nonempty and arr.size == 0:
        raise ValueError(f"{name} must not be empty; got shape {arr.shape}")
    if min_len is not None and (arr.ndim == 0 or arr.shape[0] < min_len):
        raise ValueError(f"{name} must have at least {min_len} entries along its first axis; got shape {arr.shape}")
    if finite and arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{name} must be finite; got {bad} NaN or inf value(s) in shape {arr.shape}")
    return arr


def square(x: Any, name: str, **kw) -> np.ndarray:
    """A square ``(D, D)`` real matrix."""
    arr = array(x, name, ndim=2, **kw)
    if arr.shape[0] != arr.shape[1]:
        raise ValueError(f"{name} must be a square (D, D) matrix; got shape {arr.shape}")
    return arr


def symmetric(x: Any, name: str, *, rtol: float | None = None, **kw) -> np.ndarray:
    """A symmetric ``(D, D)`` matrix, up to ``rtol`` of its largest entry.

    The default tolerance is ``1e3`` units of roundoff of the array's dtype (a kernel built in
    float32 by a sum of products is symmetric to about that).
    """
    arr = square(x, name, **kw)
    if rtol is None:
        eps = np.finfo(arr.dtype).eps if arr.dtype.kind == "f" else np.finfo(np.float64).eps
        rtol = 1e3 * eps
    scale = float(np.abs(arr).max()) if arr.size else 0.0
    asym = float(np.abs(arr - arr.T).max()) if arr.size else 0.0
    if asym > rtol * max(scale, np.finfo(np.float64).tiny):
        raise ValueError(f"{name} must be symmetric; got max |A - A^T| = {asym:.3g} at scale max |A| = {scale:.3g}")
    return arr


def same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    """``a`` and ``b`` must have the same shape."""
    if np.shape(a) != np.shape(b):
        raise ValueError(f"{name_b} must have the shape of {name_a} {np.shape(a)}; got {np.shape(b)}")


def integer(value: Any, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """An integer (not a bool) with ``low <= value <= high`` (bounds inclusive, optional)."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an integer; got {describe(value)}")
    value = int(value)
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}; got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}; got {value}")
    return value


def real(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A finite real number in the given interval (closed unless ``*_open``)."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        if hasattr(value, "shape") and np.shape(value) == () and np.asarray(value).dtype.kind in "fiu":
            value = np.asarray(value).item()
        else:
            raise TypeError(f"{name} must be a real number; got {describe(value)}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value}")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}; got {value}")
    if high is not None and (value >= high if high_open else value > high):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}; got {value}")
    return value


def choice(value: Any, name: str, options: Iterable[Any]) -> Any:
    """One of ``options``."""
    options = tuple(options)
    try:
        ok = value in options
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f"{name} must be one of {options}; got {value!r}")
    return value


def boolean(value: Any, name: str) -> bool:
    """A bool (NumPy bools accepted)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; got {describe(value)}")
    return bool(value)


def function(value: Any, name: str, signature: str = "f(params, x)") -> Callable:
    """A callable."""
    if not callable(value):
        raise TypeError(f"{name} must be a callable {signature}; got {describe(value)}")
    return value


def finite_tree(tree: Any, name: str) -> None:
    """Every floating leaf of ``tree`` is finite."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        arr = np.asarray(leaf)
        if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
            where = jax.tree_util.keystr(path) or "(array)"
            bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
            raise ValueError(f"{name}{where} must be finite; got {bad} NaN or inf value(s) in shape {arr.shape}")


def params_tree(params: Any, name: str = "params", *, finite: bool = True) -> list:
    """A pytree of floating-point arrays with at least one leaf; returns its leaves.

    Integer leaves are refused: the eNTK differentiates with respect to every leaf, and an
    integer leaf has no tangent space (keep integer data such as token tables outside
    ``params``, e.g. closed over by the model).
    """
    leaves_with_path = jax.tree_util.tree_leaves_with_path(params)
    if not leaves_with_path:
        raise ValueError(f"{name} must be a pytree with at least one array leaf; got {describe(params)} with none")
    leaves = []
    for path, leaf in leaves_with_path:
        where = jax.tree_util.keystr(path) or "(array)"
        if isinstance(leaf, (str, bytes)) or leaf is None:
            raise TypeError(f"{name}{where} must be an array; got {describe(leaf)}")
        if not hasattr(leaf, "dtype"):
            if isinstance(leaf, (numbers.Number,)) and not isinstance(leaf, bool):
                leaf = np.asarray(leaf, dtype=np.float64 if isinstance(leaf, float) else None)
            else:
                raise TypeError(f"{name}{where} must be an array; got {describe(leaf)}")
        kind = np.dtype(leaf.dtype).kind
        if kind != "f":
            raise TypeError(
                f"{name}{where} must be a floating-point array (every leaf of {name} is "
                f"differentiated); got dtype {leaf.dtype}. Keep integer or boolean data out of "
                f"{name}, e.g. closed over by the model"
            )
        leaves.append(leaf)
    if finite:
        finite_tree(params, name)
    return leaves


def rng_key(key: Any, name: str = "key") -> Any:
    """A JAX PRNG key (new-style typed key or legacy ``uint32[2]``)."""
    arr = key
    if hasattr(arr, "dtype") and jax.dtypes.issubdtype(arr.dtype, jax.dtypes.prng_key):
        return key
    if hasattr(arr, "dtype") and np.dtype(arr.dtype) == np.uint32 and tuple(np.shape(arr)) == (2,):
        return key
    raise TypeError(f"{name} must be a JAX PRNG key (jax.random.key(seed) or jax.random.PRNGKey(seed)); got {describe(key)}")


def batch(x: Any, name: str, tail: tuple, what: str) -> Any:
    """A batch of examples ``(N, *tail)`` with N >= 1, real and finite; ``what`` names the shape
    in the message (e.g. ``"(N, 2p) = (N, 58)"``). Lists are converted; traced arrays (inside
    jit/vmap) are shape-checked only, concrete ones also for dtype and finiteness."""
    if isinstance(x, (list, tuple)) or not hasattr(x, "shape"):
        x = array(x, name, ndim=1 + len(tail))
    if tuple(x.shape[1:]) != tuple(tail) or len(x.shape) != 1 + len(tail):
        raise ValueError(f"{name} must be {what}; got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one input; got shape {tuple(x.shape)}")
    if not isinstance(x, jax.core.Tracer):
        arr = np.asarray(x)
        if arr.dtype.kind not in "fiub":
            raise TypeError(f"{name} must be a real array; got dtype {arr.dtype}")
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must be finite; got NaN or inf in shape {arr.shape}")
    return x


def snapshot_index(snapshot_epochs: np.ndarray, n_runs: int, run: Any, epoch: Any) -> tuple[int, int]:
    """``(run, position of epoch in snapshot_epochs)`` for a multi-seed record's ``snapshot``."""
    run = integer(run, "run", low=0, high=n_runs - 1)
    epoch = integer(epoch, "epoch", low=0)
    hit = np.flatnonzero(snapshot_epochs == epoch)
    if hit.size == 0:
        raise ValueError(f"epoch must be one of the snapshot epochs {snapshot_epochs.tolist()}; got {epoch}")
    return run, int(hit[0])
