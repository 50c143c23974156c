"""Small models shared by the chapters: a multilayer perceptron as a pure function on a pytree.

Parameters are a dict ``{"layer1": {"w": (d_in, d_out), "b": (d_out,)}, "layer2": ...}`` so that
the layerwise eNTK's default groups (``helpers.ntk.layerwise_entk``) are the layers.

Two parametrisations (seed 003):

* ``"ntk"``: weights drawn N(0, 1), pre-activations scaled by ``1/sqrt(fan_in)`` in the
  forward pass. At initialisation the kernel differs from its infinite-width limit by
  O(1/sqrt(width)) (seed 003); during training it moves by O(1/width) (Dyer & Gur-Ari 2019;
  measured in chapter 4).
* ``"standard"``: weights drawn N(0, 1/fan_in), no scaling in the forward pass. Same function
  at initialisation, different gradient scales.

``output_scale`` multiplies the last layer's output (a small value or a mean-field
``1/sqrt(width)`` factor pushes training out of the lazy regime).

``normal`` and ``uniform`` are ``jax.random.normal`` and ``jax.random.uniform`` with the same
values, bit for bit, compiled once per power-of-two size instead of once per shape (on a CPU each
new shape costs 0.2-0.6 s of compilation, more than drawing the numbers); every initialiser in
``helpers`` draws through them, and the chapters draw their data with them.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import _checks

__all__ = ["ACTIVATIONS", "normal", "uniform", "mlp_init", "mlp_apply", "make_mlp"]

ACTIVATIONS: dict[str, Callable] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
    "softplus": jax.nn.softplus,
    "sin": jnp.sin,
    "quadratic": jnp.square,
    "linear": lambda h: h,
}


# Draws of fewer numbers than this share one compiled program.
_MIN_BUCKET = 1024


def _prefix_stable(key: Any) -> bool:
    """Whether draws with ``key`` are prefix-stable: element i of a draw of any shape is element i
    of a flat draw of any larger size. True for the threefry generator with
    ``jax_threefry_partitionable`` on (JAX's default since 0.5), where element i's bits come from
    the counter i alone; the test suite checks it on the pinned JAX."""
    if not jax.config.jax_threefry_partitionable:
        return False
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        impl = str(jax.random.key_impl(key))
    else:
        impl = str(jax.config.jax_default_prng_impl)
    return "threefry" in impl


def _bucketed(draw: Callable, key: Any, shape: Sequence[int], dtype: Any, **kwargs) -> jax.Array:
    """``draw(key, shape, dtype)``, computed as the first ``prod(shape)`` numbers of a flat draw
    whose size is the next power of two (at least ``_MIN_BUCKET``). JAX's own functions compile one
    program per shape; no library option shares them across shapes, hence this wrapper."""
    _checks.rng_key(key, "key")
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)) or not all(isinstance(d, (int, np.integer)) and d >= 0 for d in shape):
        raise TypeError(f"shape must be a tuple of non-negative ints; got {_checks.describe(shape)}")
    shape = tuple(int(d) for d in shape)
    dtype = float if dtype is None else dtype   # jax.random's own default
    if not jnp.issubdtype(jnp.dtype(dtype), jnp.inexact):
        raise TypeError(f"dtype must be a float dtype; got {_checks.describe(dtype)}")
    n = math.prod(shape)
    if n == 0 or not _prefix_stable(key):
        return draw(key, shape, dtype, **kwargs)
    size = max(_MIN_BUCKET, 1 << (n - 1).bit_length())
    flat = draw(key, (size,), dtype, **kwargs)
    if isinstance(flat, jax.core.Tracer):
        # under jit (one program: the slice is fused) or an eager vmap over keys (the slice and
        # reshape compile small programs, far cheaper than a draw of each shape)
        return flat[:n].reshape(shape)
    return jnp.asarray(np.asarray(flat)[:n].reshape(shape))


def normal(key: Any, shape: Sequence[int], dtype: Any = None) -> jax.Array:
    """Standard normal draws, equal bit for bit to ``jax.random.normal(key, shape, dtype)``.

    Drawn as a prefix of a flat draw of power-of-two size (see the module docstring), so that
    models of many widths share a few compiled programs, also under an eager ``jax.vmap`` over
    keys (inside ``jit`` it is one more slice in the program). With a generator whose draws are
    not prefix-stable it calls ``jax.random.normal`` as it is.

    Args:
        key: PRNG key.
        shape: output shape.
        dtype: float dtype (default: JAX's default float).

    Returns:
        array of ``shape``.
    """
    return _bucketed(jax.random.normal, key, shape, dtype)


def uniform(key: Any, shape: Sequence[int] = (), dtype: Any = None, minval: float = 0.0, maxval: float = 1.0) -> jax.Array:
    """Uniform draws on ``[minval, maxval)``, equal bit for bit to
    ``jax.random.uniform(key, shape, dtype, minval, maxval)`` (drawn as ``normal`` is).

    Args:
        key: PRNG key.
        shape: output shape (default: a scalar).
        dtype: float dtype (default: JAX's default float).
        minval, maxval: the interval (Python floats).

    Returns:
        array of ``shape``.
    """
    for name, value in (("minval", minval), ("maxval", maxval)):
        if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, bool):
            raise TypeError(f"{name} must be a real number; got {_checks.describe(value)}")
    return _bucketed(jax.random.uniform, key, shape, dtype, minval=minval, maxval=maxval)


def _check_sizes(sizes: Sequence[int]) -> list[int]:
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__"):
        raise TypeError(f"sizes must be a list of layer widths [d_in, hidden..., d_out]; got {_checks.describe(sizes)}")
    sizes = list(sizes)
    if len(sizes) < 2 or any(not isinstance(s, (int, np.integer)) or isinstance(s, bool) or s < 1 for s in sizes):
        raise ValueError(f"sizes must be >= 2 positive integers (input, hidden..., output); got {sizes}")
    return [int(s) for s in sizes]


def _check_dtype(dtype) -> Any:
    try:
        dt = np.dtype(dtype)
    except TypeError as err:
        raise TypeError(f"dtype must be a floating-point dtype; got {dtype!r}") from err
    if dt.kind != "f":
        raise TypeError(f"dtype must be a floating-point dtype (parameters are differentiated); got {dt}")
    return dtype


def mlp_init(
    key: jax.Array,
    sizes: Sequence[int],
    *,
    parametrization: str = "ntk",
    bias: bool = True,
    dtype=jnp.float32,
) -> dict:
    """Random MLP parameters.

    Args:
        key: PRNG key.
        sizes: ``[d_in, hidden_1, ..., d_out]``.
        parametrization: ``"ntk"`` (N(0, 1) weights) or ``"standard"`` (N(0, 1/fan_in)).
        bias: include biases, drawn N(0, 0.1^2) (small but nonzero, so that the bias
            directions of the kernel are not degenerate at initialisation).

    Returns:
        dict ``{"layer1": {"w": (d0, d1), "b": (d1,)}, ...}``.
    """
    _checks.rng_key(key, "key")
    sizes = _check_sizes(sizes)
    _checks.choice(parametrization, "parametrization", ("ntk", "standard"))
    _checks.boolean(bias, "bias")
    _check_dtype(dtype)
    params = {}
    keys = jax.random.split(key, 2 * (len(sizes) - 1))
    for layer, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = normal(keys[2 * layer], (d_in, d_out), dtype)
        if parametrization == "standard":
            w = w / jnp.sqrt(d_in)
        entry = {"w": w}
        if bias:
            entry["b"] = 0.1 * normal(keys[2 * layer + 1], (d_out,), dtype)
        params[f"layer{layer + 1}"] = entry
    return params


def mlp_apply(
    params: dict,
    x: jnp.ndarray,
    *,
    activation: str = "tanh",
    parametrization: str = "ntk",
    output_scale: float = 1.0,
) -> jnp.ndarray:
    """Forward pass ``x (N, d_in) -> (N, d_out)``; the activation acts on every hidden layer.

    Checks shapes only (it runs inside ``jit``, where values are not known).
    """
    _checks.choice(activation, "activation", sorted(ACTIVATIONS))
    _checks.choice(parametrization, "parametrization", ("ntk", "standard"))
    if not isinstance(params, dict) or not params or not all(
        isinstance(k, str) and k.startswith("layer") and k.removeprefix("layer").isdigit() and isinstance(v, dict) and "w" in v
        for k, v in params.items()
    ):
        raise TypeError(
            "params must be the dict of mlp_init, {'layer1': {'w': ..., 'b': ...}, ...}; got "
            f"{_checks.describe(params) if not isinstance(params, dict) else sorted(params)}"
        )
    if not hasattr(x, "shape") or len(x.shape) not in (1, 2):
        raise ValueError(f"x must be a batch of shape (N, d_in) (or one example, (d_in,)); got {_checks.describe(x)}")
    act = ACTIVATIONS[activation]
    names = sorted(params, key=lambda s: int(s.removeprefix("layer")))
    h = x
    for i, name in enumerate(names):
        layer = params[name]
        w = layer["w"]
        if h.shape[-1] != w.shape[0]:
            raise ValueError(f"x has {h.shape[-1]} features at {name}, but params[{name!r}]['w'] expects {w.shape[0]}")
        scale = 1.0 / jnp.sqrt(w.shape[0]) if parametrization == "ntk" else 1.0
        h = scale * (h @ w)
        if "b" in layer:
            h = h + layer["b"]
        if i < len(names) - 1:
            h = act(h)
    return output_scale * h


def make_mlp(
    sizes: Sequence[int],
    *,
    key: jax.Array,
    activation: str = "tanh",
    parametrization: str = "ntk",
    bias: bool = True,
    output_scale: float = 1.0,
    dtype=jnp.float32,
) -> tuple[Callable, dict]:
    """Return ``(f, params)`` with ``f(params, x) -> (N, d_out)``, ready for ``helpers.ntk``."""
    _checks.choice(activation, "activation", sorted(ACTIVATIONS))
    _checks.real(output_scale, "output_scale")
    params = mlp_init(key, sizes, parametrization=parametrization, bias=bias, dtype=dtype)

    def f(p, x):
        return mlp_apply(p, x, activation=activation, parametrization=parametrization, output_scale=output_scale)

    return f, params
