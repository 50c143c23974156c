"""Shapley attribution of parameter moves over coalitions of parameters (seed 001 §3).

The games. Players are groups of parameters (hidden neurons with their weights, blocks of a
layer), labelled by an integer pytree ``labels`` with the structure of ``params`` (``-1``:
not a player, never moved). A coalition ``S`` moves only its own parameters; its value is the
loss decrease that move produces:

* gradient-step game, ``v(S) = L(theta) - L(theta - eta g_S)`` with ``g = grad L(theta)``
  restricted to the parameters of ``S`` (``step_game``);
* displacement game, ``v(S) = L(theta0) - L(theta0 + Delta_S)`` for a given displacement
  ``Delta`` (e.g. ``theta_t - theta_0``, what training did), restricted to ``S``
  (``displacement_game``);
* training game, ``v(S) = L(theta) - L(theta_S^(k))`` where ``theta_S^(k)`` is ``k`` optimiser
  steps in which only the parameters of ``S`` move, so that each player's later steps respond
  to what its partners did (``training_game``).

With a scalar readout ``r`` in place of the loss, ``v(S) = r(moved) - r(theta)``.

Coalitions are bit masks: coalition ``s`` (an integer in ``[0, 2**n)``) holds player ``i``
iff bit ``i`` of ``s`` is set. An enumerated game is the array ``values`` of shape ``(2**n,)``.

Exact tools on the subset lattice:

* Moebius (Harsanyi) dividends ``m(T) = sum_{S <= T} (-1)^{|T|-|S|} v(S)`` by the fast
  subset-sum transform, O(n 2**n); the interaction of order ``|T|``.
* Shapley values ``phi_i = sum_{T contains i} m(T) / |T|``.
* Level structures (nested partitions of the players, coarse to fine): the Winter value
  (Owen value for one level of unions), which splits every dividend equally among the
  unions it touches at the top level, then equally among the sub-unions it touches inside
  each, down to the players; and the dividend mass per level: each coalition ``T`` is charged
  to the finest level at which it still lies inside one block (``T`` "lives" at the node of
  the tree that is its lowest common ancestor).

Pairwise games with many players. When every player's move changes the model output by its
own additive contribution ``Delta_a`` (one hidden layer: the output is a sum over neurons) and
the loss is the mean squared error, the game is a quadratic polynomial in the indicator of
``S``: every dividend of order three or more vanishes and the pair dividends are a Gram matrix,
``m({a, b}) = -(2/M) <Delta_a, Delta_b>`` (``pairwise_dividends``). Such games are handled for
any number of players, with the pair mass sorted by the levels of a player tree
(``pair_levels``, ``pairwise_mass_by_level``, ``level_height``).

Player trees from kernels: per-player similarities from the tangent kernel (``J^T J``
aggregated per group), the Hessian along the gradient, and the gradient-noise covariance
(seed 001 §1-§2); a hierarchical spectral clustering of the players into nested levels
(``scipy.cluster.hierarchy``); a flat k-means partition for comparison.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from scipy.cluster import hierarchy
from scipy.cluster.vq import kmeans2

from . import _checks

__all__ = [
    "MAX_PLAYERS",
    "coalition_masks",
    "coalition_sizes",
    "unit_labels",
    "count_players",
    "step_game",
    "displacement_game",
    "training_game",
    "mobius",
    "zeta",
    "shapley_values",
    "shapley_from_marginals",
    "mass_by_order",
    "check_levels",
    "winter_values",
    "owen_values",
    "level_depths",
    "mass_by_level",
    "quotient_game",
    "pairwise_dividends",
    "pair_levels",
    "pairwise_mass_by_level",
    "level_height",
    "gradient_hessian_coupling",
    "group_grams",
    "flat_labels",
    "alignment",
    "tangent_similarity",
    "hessian_similarity",
    "noise_similarity",
    "player_tree",
    "flat_partition",
    "partition_agreement",
]

MAX_PLAYERS = 20
"""Largest player count for exact enumeration (``2**20`` coalitions)."""


# ----------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------


def _check_n(n_players: Any, name: str = "n_players", *, enumerate_: bool = True) -> int:
    if isinstance(n_players, bool) or not isinstance(n_players, (int, np.integer)):
        raise TypeError(f"{name} must be an integer; got {_checks.describe(n_players)}")
    if n_players < 1:
        raise ValueError(f"{name} must be >= 1; got {n_players}")
    if enumerate_ and n_players > MAX_PLAYERS:
        raise ValueError(
            f"{name} must lie in [1, {MAX_PLAYERS}] (MAX_PLAYERS, the limit for exact enumeration "
            f"of 2**n coalitions); got {n_players}"
        )
    return int(n_players)


def _check_values(values: Any, name: str = "values") -> tuple[np.ndarray, int]:
    v = _checks.array(values, name, ndim=1).astype(np.float64)
    if v.size < 2 or v.size & (v.size - 1):
        raise ValueError(f"{name} must be a 1-d array of length 2**n (one value per coalition); got shape {v.shape}")
    n = v.size.bit_length() - 1
    if n > MAX_PLAYERS:
        raise ValueError(f"{name} encodes {n} players, more than MAX_PLAYERS = {MAX_PLAYERS}")
    return v, n


def _check_labels(labels: Any, params: Any, name: str = "labels") -> None:
    """``labels`` has the tree structure and leaf shapes of ``params``, integer leaves >= -1."""
    try:
        structure_ok = jax.tree_util.tree_structure(labels) == jax.tree_util.tree_structure(params)
    except Exception:  # noqa: BLE001 - any failure to compare means a mismatch
        structure_ok = False
    if not structure_ok:
        raise ValueError(
            f"{name} must have the tree structure of params ({jax.tree_util.tree_structure(params)}); "
            f"got {jax.tree_util.tree_structure(labels)}"
        )
    for (path, l), p in zip(jax.tree_util.tree_leaves_with_path(labels), jax.tree_util.tree_leaves(params)):
        where = jax.tree_util.keystr(path) or "(array)"
        arr = np.asarray(l)
        if arr.dtype.kind not in "iu":
            raise TypeError(f"{name}{where} must be an integer array (player of each parameter); got dtype {arr.dtype}")
        if arr.shape != np.shape(p):
            raise ValueError(f"{name}{where} must have the shape of the params leaf {np.shape(p)}; got {arr.shape}")
        if arr.size and arr.min() < -1:
            raise ValueError(f"{name}{where} must be >= -1 (-1: not a player); got {arr.min()}")


def _check_loss_output(value: np.ndarray, fn_name: str) -> None:
    if not np.all(np.isfinite(value)):
        bad = int(value.size - np.count_nonzero(np.isfinite(value)))
        raise ValueError(
            f"{fn_name} returned NaN or inf for {bad} of {value.size} coalitions: the moved parameters "
            "leave the region where the loss is finite (reduce step_size, steps or the displacement)"
        )


def _check_sequence(value: Any, name: str) -> list:
    if isinstance(value, np.ndarray) and value.ndim == 2:
        return list(value)
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{name} must be a list or tuple; got {_checks.describe(value)}")
    return list(value)


# ----------------------------------------------------------------------------------------
# coalitions and players
# ----------------------------------------------------------------------------------------


def coalition_masks(n_players: int) -> np.ndarray:
    """All coalitions as boolean rows: returns ``(2**n, n)``, row ``s`` has ``[i] = bit i of s``."""
    n = _check_n(n_players)
    s = np.arange(2**n)
    return ((s[:, None] >> np.arange(n)[None, :]) & 1).astype(bool)


def coalition_sizes(n_players: int) -> np.ndarray:
    """``|S|`` for every coalition ``s`` in ``range(2**n)``: returns ``(2**n,)`` ints."""
    return coalition_masks(n_players).sum(axis=1)


def _leaf_key(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def unit_labels(params: Any, unit_axes: dict[str, int], assignment: Any) -> Any:
    """Player labels for the parameters from a unit -> player assignment.

    Args:
        params: pytree of arrays.
        unit_axes: ``{leaf path: axis}``; along ``axis`` of that leaf runs the unit (hidden
            neuron) index, e.g. ``{"W1": 0, "W2": 1}`` for the modular model (neuron ``j`` owns
            row ``j`` of ``W1`` and column ``j`` of ``W2``), or ``{"layer1/w": 1, "layer1/b": 0}``
            for an MLP. Paths join dict keys with ``/``. Leaves not named get label ``-1``.
        assignment: ``(n_units,)`` ints, the player of every unit (``-1``: no player).

    Returns:
        pytree like ``params`` of int32 arrays of the leaves' shapes.
    """
    _checks.params_tree(params, "params", finite=False)
    if not isinstance(unit_axes, dict):
        raise TypeError(f"unit_axes must be a dict {{leaf path: axis}}; got {_checks.describe(unit_axes)}")
    assignment = _checks.array(assignment, "assignment", ndim=1, kind="int")
    if assignment.min() < -1:
        raise ValueError(f"assignment must hold player indices >= -1 (-1: no player); got {assignment.min()}")
    paths = {_leaf_key(path): np.shape(leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
    unknown = sorted(set(unit_axes) - set(paths))
    if unknown:
        raise ValueError(f"unit_axes names leaves {unknown} not in params (leaves: {sorted(paths)})")
    for key, axis in unit_axes.items():
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -len(paths[key]) <= axis < len(paths[key]):
            raise ValueError(f"unit_axes[{key!r}] must be an axis of a leaf of shape {paths[key]}; got {axis!r}")

    def label(path, leaf):
        key = _leaf_key(path)
        shape = np.shape(leaf)
        if key not in unit_axes:
            return np.full(shape, -1, np.int32)
        axis = unit_axes[key] % len(shape)
        if shape[axis] != assignment.size:
            raise ValueError(
                f"assignment must have one entry per unit: leaf {key!r} has {shape[axis]} units along axis "
                f"{axis} but assignment has {assignment.size}"
            )
        idx = [None] * len(shape)
        idx[axis] = slice(None)
        return np.broadcast_to(assignment[tuple(idx)], shape).astype(np.int32)

    return jax.tree_util.tree_map_with_path(label, params)


def _label_leaves(labels: Any, name: str = "labels") -> np.ndarray:
    leaves = jax.tree_util.tree_leaves(labels)
    if not leaves:
        raise ValueError(f"{name} must be a pytree of integer arrays with at least one leaf; got {_checks.describe(labels)}")
    flat = []
    for path, l in jax.tree_util.tree_leaves_with_path(labels):
        arr = np.asarray(l)
        if arr.dtype.kind not in "iu":
            raise TypeError(f"{name}{jax.tree_util.keystr(path)} must be an integer array; got dtype {arr.dtype}")
        flat.append(arr.ravel())
    return np.concatenate(flat)


def count_players(labels: Any) -> int:
    """Number of players ``max(label) + 1`` of a label pytree; checks every player owns a parameter."""
    flat = _label_leaves(labels)
    if flat.size == 0 or flat.max() < 0:
        raise ValueError("labels assign no parameter to any player (every label is -1)")
    if flat.min() < -1:
        raise ValueError(f"labels must be >= -1 (-1: not a player); got {flat.min()}")
    n = int(flat.max()) + 1
    missing = sorted(set(range(n)) - set(np.unique(flat[flat >= 0]).tolist()))
    if missing:
        raise ValueError(f"labels name players 0..{n - 1} but players {missing} own no parameter")
    return _check_n(n, "number of players in labels")


# ----------------------------------------------------------------------------------------
# games: values of all coalitions, in vectorised chunks
# ----------------------------------------------------------------------------------------

_EVALUATORS: dict = {}


def _cached(key, build):
    if key not in _EVALUATORS:
        if len(_EVALUATORS) > 64:
            _EVALUATORS.clear()
        _EVALUATORS[key] = build()
    return _EVALUATORS[key]


def _masked(tree, idx, m):
    """``tree`` with every entry whose player is not in the coalition ``m`` set to zero."""
    return jax.tree_util.tree_map(lambda x, i: x * m[i].astype(x.dtype), tree, idx)


def _displacement_evaluator(objective: Callable, is_loss: bool) -> Callable:
    """Jitted ``(params, direction, idx, masks) -> values``; params are arguments, never
    constants, so games at many checkpoints compile once."""

    def build():
        def values(params, direction, idx, args, masks):
            base = objective(params, *args)

            def value(mask):
                m = jnp.concatenate([mask, jnp.zeros((1,), mask.dtype)])
                new = objective(jax.tree_util.tree_map(jnp.add, params, _masked(direction, idx, m)), *args)
                return base - new if is_loss else new - base

            return jax.vmap(value)(masks)

        return jax.jit(values)

    return _cached(("displacement", objective, is_loss), build)


def _training_evaluator(loss_fn: Callable, objective: Callable, is_loss: bool, optimizer, steps: int) -> Callable:
    def build():
        def values(params, opt_state, idx, args, masks):
            base = objective(params, *args)

            def value(mask):
                m = jnp.concatenate([mask, jnp.zeros((1,), mask.dtype)])

                def one_step(_, carry):
                    p, s = carry
                    g = _masked(jax.grad(loss_fn)(p, *args), idx, m)
                    updates, s = optimizer.update(g, s, p)
                    return optax.apply_updates(p, _masked(updates, idx, m)), s

                p, _ = jax.lax.fori_loop(0, steps, one_step, (params, opt_state))
                new = objective(p, *args)
                return base - new if is_loss else new - base

            return jax.vmap(value)(masks)

        return jax.jit(values)

    return _cached(("training", loss_fn, objective, is_loss, optimizer, steps), build)


def _player_index(labels: Any, n: int) -> Any:
    # label -1 -> index n, a padding entry that is always False
    return jax.tree_util.tree_map(lambda l: jnp.where(jnp.asarray(l) < 0, n, jnp.asarray(l)), labels)


def _run_chunks(fn, n: int, chunk: int, *args) -> np.ndarray:
    masks = coalition_masks(n)
    out = [np.asarray(fn(*args, jnp.asarray(masks[i : i + chunk]))) for i in range(0, masks.shape[0], chunk)]
    values = np.concatenate(out).astype(np.float64)
    values[0] = 0.0
    return values


def _common_game_checks(loss_fn, params, labels, readout, chunk, args) -> int:
    _checks.function(loss_fn, "loss_fn", "loss_fn(params, *args) -> scalar")
    if readout is not None:
        _checks.function(readout, "readout", "readout(params, *args) -> scalar")
    if not isinstance(args, tuple):
        raise TypeError(f"args must be a tuple of extra arguments of loss_fn; got {_checks.describe(args)}")
    for i, a in enumerate(jax.tree_util.tree_leaves(args)):
        arr = np.asarray(a)
        if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
            raise ValueError(f"args must be finite; leaf {i} holds NaN or inf")
    _checks.params_tree(params, "params")
    _check_labels(labels, params)
    _checks.integer(chunk, "chunk", low=1)
    return count_players(labels)


def displacement_game(
    loss_fn: Callable[[Any], jnp.ndarray],
    params: Any,
    displacement: Any,
    labels: Any,
    *,
    readout: Callable[..., jnp.ndarray] | None = None,
    args: tuple = (),
    chunk: int = 256,
) -> np.ndarray:
    """All ``2**n`` values of the displacement game ``v(S) = L(theta0) - L(theta0 + Delta_S)``.

    Args:
        loss_fn: ``loss_fn(params) -> scalar`` (batch closed over).
        params: pytree, the starting point ``theta0``.
        displacement: pytree like ``params``, the move ``Delta`` (e.g. ``theta_t - theta_0``);
            coalition ``S`` applies only the entries of its players.
        labels: int pytree like ``params``: player of each parameter, ``-1`` = never moved.
        readout: optional ``readout(params) -> scalar``; if given, ``v(S) = r(theta0 +
            Delta_S) - r(theta0)``.
        args: extra arguments passed on as ``loss_fn(params, *args)`` (and to ``readout``):
            data passed this way, instead of closed over, lets one compiled evaluator serve
            many batches.
        chunk: coalitions evaluated per ``vmap`` call.

    Returns:
        ``(2**n,)`` float64, ``values[s]`` for the coalition with bit mask ``s``; ``values[0] = 0``.
    """
    n = _common_game_checks(loss_fn, params, labels, readout, chunk, args)
    _checks.params_tree(displacement, "displacement")
    try:
        same = jax.tree_util.tree_structure(displacement) == jax.tree_util.tree_structure(params)
    except Exception:  # noqa: BLE001
        same = False
    if not same or any(np.shape(d) != np.shape(p) for d, p in zip(jax.tree_util.tree_leaves(displacement), jax.tree_util.tree_leaves(params))):
        raise ValueError(
            "displacement must be a pytree with the structure and leaf shapes of params; got "
            f"{[np.shape(d) for d in jax.tree_util.tree_leaves(displacement)]} for params "
            f"{[np.shape(p) for p in jax.tree_util.tree_leaves(params)]}"
        )
    evaluate = _displacement_evaluator(loss_fn if readout is None else readout, readout is None)
    values = _run_chunks(evaluate, n, chunk, params, displacement, _player_index(labels, n), args)
    _check_loss_output(values, "loss_fn" if readout is None else "readout")
    return values


def step_game(
    loss_fn: Callable[[Any], jnp.ndarray],
    params: Any,
    labels: Any,
    *,
    step_size: float,
    readout: Callable[..., jnp.ndarray] | None = None,
    args: tuple = (),
    chunk: int = 256,
) -> np.ndarray:
    """All ``2**n`` coalition values of the gradient-step game, in vectorised chunks.

    Args:
        loss_fn: ``loss_fn(params) -> scalar`` (batch closed over).
        params: pytree, the point ``theta``.
        labels: int pytree like ``params``: player of each parameter, ``-1`` = never moved.
        step_size: ``eta > 0``.
        readout: optional ``readout(params) -> scalar``; if given, the readout game
            ``v(S) = r(theta - eta g_S) - r(theta)``; else the loss game
            ``v(S) = L(theta) - L(theta - eta g_S)``.
        args: extra arguments, ``loss_fn(params, *args)`` (see ``displacement_game``).
        chunk: coalitions evaluated per ``vmap`` call.

    Returns:
        ``(2**n,)`` float64, ``values[s]`` for the coalition with bit mask ``s``; ``values[0] = 0``.
    """
    n = _common_game_checks(loss_fn, params, labels, readout, chunk, args)
    eta = _checks.real(step_size, "step_size", low=0.0, low_open=True)
    grads = _cached(("grad", loss_fn), lambda: jax.jit(jax.grad(loss_fn)))(params, *args)
    _checks.finite_tree(grads, "the gradient of loss_fn at params")
    direction = jax.tree_util.tree_map(lambda g: -eta * g, grads)
    evaluate = _displacement_evaluator(loss_fn if readout is None else readout, readout is None)
    values = _run_chunks(evaluate, n, chunk, params, direction, _player_index(labels, n), args)
    _check_loss_output(values, "loss_fn" if readout is None else "readout")
    return values


def training_game(
    loss_fn: Callable[[Any], jnp.ndarray],
    params: Any,
    labels: Any,
    *,
    optimizer: optax.GradientTransformation,
    steps: int,
    opt_state: Any = None,
    readout: Callable[..., jnp.ndarray] | None = None,
    args: tuple = (),
    chunk: int = 256,
) -> np.ndarray:
    """All ``2**n`` values of the training game: ``S`` alone trains for ``steps`` steps.

    ``v(S) = L(theta) - L(theta_S)`` where ``theta_S`` is the result of ``steps`` updates of
    ``optimizer`` from ``(params, opt_state)`` in which the gradient and the update of every
    parameter outside ``S`` are set to zero. Unlike the one-step game, a player's later steps
    depend on what its partners did, so dividends of any order can appear. ``steps = 1`` with
    ``optax.sgd(eta)`` is ``step_game``.

    Args:
        loss_fn: ``loss_fn(params) -> scalar``.
        params: pytree, the starting point.
        labels: int pytree like ``params`` (``-1``: never moved).
        optimizer: an optax ``GradientTransformation``; reuse one object across calls so the
            evaluator compiles once.
        steps: number of updates (``>= 1``).
        opt_state: the optimiser state at ``params`` (e.g. carried from training); default
            ``optimizer.init(params)``.
        readout: optional scalar readout in place of the loss (``v(S) = r(theta_S) - r(theta)``).
        args: extra arguments, ``loss_fn(params, *args)`` (see ``displacement_game``).
        chunk: coalitions per ``vmap`` call.

    Returns:
        ``(2**n,)`` float64 values, ``values[0] = 0``.
    """
    n = _common_game_checks(loss_fn, params, labels, readout, chunk, args)
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"optimizer must be an optax.GradientTransformation; got {_checks.describe(optimizer)}")
    steps = _checks.integer(steps, "steps", low=1)
    if opt_state is None:
        opt_state = optimizer.init(params)
    else:
        _checks.finite_tree(opt_state, "opt_state")
        try:
            expected = jax.tree_util.tree_structure(optimizer.init(params))
            ok = jax.tree_util.tree_structure(opt_state) == expected and all(
                np.shape(a) == np.shape(b)
                for a, b in zip(jax.tree_util.tree_leaves(opt_state), jax.tree_util.tree_leaves(optimizer.init(params)))
            )
        except Exception:  # noqa: BLE001
            ok = False
        if not ok:
            raise ValueError("opt_state must be a state of optimizer for params (the structure of optimizer.init(params))")
    evaluate = _training_evaluator(loss_fn, loss_fn if readout is None else readout, readout is None, optimizer, steps)
    values = _run_chunks(evaluate, n, chunk, params, opt_state, _player_index(labels, n), args)
    _check_loss_output(values, "loss_fn" if readout is None else "readout")
    return values


# ----------------------------------------------------------------------------------------
# Moebius transform, Shapley values, mass by order
# ----------------------------------------------------------------------------------------


def _subset_transform(v: np.ndarray, n: int, sign: float) -> np.ndarray:
    out = v.copy()
    for i in range(n):
        view = out.reshape(-1, 2, 2**i)  # axis 1 is bit i
        view[:, 1, :] += sign * view[:, 0, :]
    return out


def mobius(values: Any) -> np.ndarray:
    """Moebius (Harsanyi) dividends ``m(T) = sum_{S <= T} (-1)^{|T|-|S|} v(S)``.

    ``values``: ``(2**n,)``; returns ``(2**n,)``. Fast subset-sum transform, O(n 2**n).
    ``m({i}) = v({i}) - v(empty)``, ``m({i,j}) = v({i,j}) - v({i}) - v({j}) + v(empty)``, ...
    """
    v, n = _check_values(values)
    return _subset_transform(v, n, -1.0)


def zeta(dividends: Any) -> np.ndarray:
    """Inverse of ``mobius``: ``v(S) = sum_{T <= S} m(T)``; ``(2**n,)`` -> ``(2**n,)``."""
    m, n = _check_values(dividends, "dividends")
    return _subset_transform(m, n, +1.0)


def shapley_values(values: Any) -> np.ndarray:
    """Exact Shapley values ``phi_i = sum_{T contains i} m(T) / |T|`` (seed 001 §3).

    ``values``: ``(2**n,)`` game; returns ``(n,)``. Efficiency: ``sum phi = v(N) - v(empty)``.
    """
    m = mobius(values)
    n = m.size.bit_length() - 1
    masks = coalition_masks(n)
    sizes = masks.sum(axis=1)
    share = np.where(sizes > 0, m / np.maximum(sizes, 1), 0.0)
    return masks.T.astype(np.float64) @ share


def shapley_from_marginals(values: Any) -> np.ndarray:
    """Shapley values from the marginal-contribution formula
    ``phi_i = sum_{S not containing i} |S|! (n-|S|-1)! / n! [v(S + i) - v(S)]``; ``(2**n,)`` -> ``(n,)``."""
    v, n = _check_values(values)
    masks = coalition_masks(n)
    sizes = masks.sum(axis=1)
    weight = np.array([math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n) for k in range(n)])
    s = np.arange(2**n)
    phi = np.zeros(n)
    for i in range(n):
        without = s[~masks[:, i]]
        phi[i] = np.sum(weight[sizes[without]] * (v[without | (1 << i)] - v[without]))
    return phi


def mass_by_order(dividends: Any, *, absolute: bool = False) -> np.ndarray:
    """Dividend mass per interaction order: ``out[k] = sum_{|T| = k} m(T)`` (or ``|m(T)|``).

    ``dividends``: ``(2**n,)`` (from ``mobius``); returns ``(n + 1,)``, ``out[0] = m(empty)``.
    The signed masses sum to ``v(N)``.
    """
    m, n = _check_values(dividends, "dividends")
    _checks.boolean(absolute, "absolute")
    sizes = coalition_sizes(n)
    return np.bincount(sizes, weights=np.abs(m) if absolute else m, minlength=n + 1)


# ----------------------------------------------------------------------------------------
# level structures: Owen / Winter values, mass per level
# ----------------------------------------------------------------------------------------


def check_levels(levels: Any, n_players: int) -> list[np.ndarray]:
    """Validate a level structure and return it with the trivial top and bottom levels added.

    Args:
        levels: sequence of ``(n,)`` integer arrays, coarse to fine; ``levels[k][i]`` is the
            block of player ``i`` at level ``k``. Each level must refine the one before it.
        n_players: ``n`` (any number: no enumeration happens here).

    Returns:
        list of ``(n,)`` int arrays, starting with the grand coalition (all zeros) and ending
        with the singletons (``arange(n)``), duplicates removed; blocks relabelled ``0..B-1``.
    """
    n = _check_n(n_players, enumerate_=False)
    levels = _check_sequence(levels, "levels")
    out = [np.zeros(n, np.int64)]
    for k, lev in enumerate(levels):
        a = _checks.array(lev, f"levels[{k}]", kind="int", nonempty=False)
        if a.shape != (n,):
            raise ValueError(f"levels[{k}] must be an integer array of shape ({n},) (a block per player); got {a.dtype} {a.shape}")
        a = np.unique(a, return_inverse=True)[1].astype(np.int64).reshape(n)
        prev = out[-1]
        # refinement: every block of `a` must lie inside one block of `prev`
        pairs = np.unique(np.stack([a, prev]), axis=1)
        if pairs.shape[1] != np.unique(a).size:
            b = int(pairs[0][np.flatnonzero(np.diff(pairs[0]) == 0)[0]])
            raise ValueError(
                f"levels[{k}] does not refine the level above it: its block {b} straddles blocks "
                f"{np.unique(prev[a == b]).tolist()}; the levels must be nested partitions of the players (coarse to fine)"
            )
        if np.unique(a).size != np.unique(prev).size:
            out.append(a)
    if np.unique(out[-1]).size != n:
        out.append(np.arange(n, dtype=np.int64))
    return out


def _split_shares(n: int, levels: list[np.ndarray]) -> np.ndarray:
    """``(2**n, n)``: the share of each coalition's dividend that each player receives."""
    masks = coalition_masks(n)
    share = np.zeros(masks.shape)
    share[masks] = 1.0
    # at each level, a coalition's share is split equally among the blocks it touches
    # inside each block of the level above; process from top to bottom.
    for depth in range(1, len(levels)):
        parent, child = levels[depth - 1], levels[depth]
        for pb in np.unique(parent):
            in_parent = parent == pb
            children = np.unique(child[in_parent])
            touches = np.stack([(masks & (child == c)[None, :]).any(axis=1) for c in children], axis=1)
            n_touched = touches.sum(axis=1)
            for j, c in enumerate(children):
                cols = child == c
                share[:, cols] *= np.where(n_touched > 0, 1.0 / np.maximum(n_touched, 1), 0.0)[:, None]
    return share * masks


def winter_values(values: Any, levels: Sequence[Any]) -> np.ndarray:
    """Winter's level-structure value: Shapley between unions at each level, then within.

    Every dividend ``m(T)`` is split equally among the top-level unions ``T`` touches, each
    union's part equally among the sub-unions it touches, ..., down to the players of ``T``
    (Winter 1989; Owen 1977 for one level). ``values``: ``(2**n,)``; ``levels``: nested
    partitions, coarse to fine (see ``check_levels``). Returns ``(n,)``. With no levels
    (``[]``) this is the Shapley value.
    """
    v, n = _check_values(values)
    levs = check_levels(levels, n)
    m = _subset_transform(v, n, -1.0)
    return _split_shares(n, levs).T @ m


def owen_values(values: Any, partition: Any) -> np.ndarray:
    """Owen value for one level of unions ``partition`` (``(n,)`` block labels); returns ``(n,)``."""
    v, n = _check_values(values)
    part = _checks.array(partition, "partition", kind="int", nonempty=False)
    if part.shape != (n,):
        raise ValueError(f"partition must be an integer array of shape ({n},) (a union per player); got shape {part.shape}")
    return winter_values(v, [part])


def level_depths(n_players: int, levels: Sequence[Any]) -> np.ndarray:
    """For every coalition, the finest level at which it lies inside one block.

    Returns ``(2**n,)`` ints in ``[0, L-1]`` (``L`` levels after ``check_levels``; 0 = only
    the grand coalition holds it, ``L-1`` = singletons); ``-1`` for the empty coalition.
    """
    n = _check_n(n_players)
    levs = check_levels(levels, n)
    masks = coalition_masks(n)
    depth = np.full(2**n, -1)
    for k, lev in enumerate(levs):
        inside = np.zeros(2**n, bool)
        for b in np.unique(lev):
            inside |= ~(masks & (lev != b)[None, :]).any(axis=1)
        depth[inside] = k
    depth[0] = -1
    return depth


def mass_by_level(dividends: Any, levels: Sequence[Any], *, absolute: bool = False) -> np.ndarray:
    """Dividend mass at each level of a player tree (the between-cluster interaction mass).

    ``out[k] = sum of m(T)`` (or ``|m(T)|``) over coalitions ``T`` whose smallest enclosing
    block is at level ``k``: ``T`` lies inside one block of level ``k`` but spans at least two
    blocks of level ``k + 1``. ``out[-1]`` is the singleton (first-order) mass; ``out[0]`` the
    interactions across the top split. Returns ``(L,)``; the signed masses sum to
    ``v(N) - v(empty)``.
    """
    m, n = _check_values(dividends, "dividends")
    _checks.boolean(absolute, "absolute")
    depth = level_depths(n, levels)
    L = depth.max() + 1
    w = np.abs(m) if absolute else m
    return np.bincount(depth[1:], weights=w[1:], minlength=L)


def quotient_game(values: Any, partition: Any) -> np.ndarray:
    """The game played by the blocks of ``partition`` as single players.

    ``values``: ``(2**n,)``; ``partition``: ``(n,)`` block labels ``0..B-1``. Returns
    ``(2**B,)``, ``u(R) = v(union of the blocks in R)``.
    """
    v, n = _check_values(values)
    part = _checks.array(partition, "partition", kind="int", nonempty=False)
    if part.shape != (n,):
        raise ValueError(f"partition must be an integer array of shape ({n},); got {part.dtype} {part.shape}")
    part = np.unique(part, return_inverse=True)[1].reshape(n)
    B = part.max() + 1
    block_bits = np.array([int(np.sum(1 << np.flatnonzero(part == b))) for b in range(B)], dtype=np.int64)
    rmasks = coalition_masks(B)
    s = (rmasks * block_bits[None, :]).sum(axis=1)
    return v[s]


# ----------------------------------------------------------------------------------------
# pairwise games with many players (additive contributions, squared error)
# ----------------------------------------------------------------------------------------


def pairwise_dividends(residual: Any, contributions: Any = None, *, factors: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact Moebius dividends of a game whose players add their own output changes.

    If moving the parameters of ``S`` changes the outputs by ``sum_{a in S} Delta_a`` exactly
    (each player's contribution to the output depends on its own parameters only, as for the
    neurons of one hidden layer) and ``L(f) = mean_{x, c} (f_c(x) - y_c(x))**2`` over
    ``M = N C`` entries, then ``v(S) = L(f) - L(f + Delta_S)`` is quadratic in the indicator of
    ``S`` and::

        m({a})    = -(2/M) <r, Delta_a> - |Delta_a|^2 / M,
        m({a, b}) = -(2/M) <Delta_a, Delta_b>,        m(T) = 0 for |T| >= 3,

    with ``r = f - y`` the residual at the starting point, at any size of the move.

    Args:
        residual: ``(N, C)`` (or ``(N,)``), ``f(theta0) - y``.
        contributions: ``(n, N, C)`` (or ``(n, N)``), ``Delta_a``.
        factors: instead of ``contributions``, a pair ``(activations (K, n, N), readouts
            (K, n, C))`` with ``Delta_a[x, c] = sum_k activations[k, a, x] readouts[k, a, c]``
            (a one-hidden-layer network: ``K = 2``, new minus old); the Gram is then formed
            from ``K**2`` products of ``(n, N)`` and ``(n, C)`` factors, never ``(n, N C)``.

    Returns:
        ``(singles (n,), pairs (n, n))``: ``pairs`` symmetric with a zero diagonal.
    """
    r = _checks.array(residual, "residual", ndim=(1, 2), kind="float")
    if r.ndim == 1:
        r = r[:, None]
    N, C = r.shape
    M = N * C
    if (contributions is None) == (factors is None):
        raise TypeError("pairwise_dividends needs exactly one of contributions and factors; got "
                        f"contributions={_checks.describe(contributions)}, factors={_checks.describe(factors)}")
    if contributions is not None:
        D = _checks.array(contributions, "contributions", ndim=(2, 3), kind="float")
        if D.ndim == 2:
            D = D[:, :, None]
        if D.shape[1:] != (N, C):
            raise ValueError(f"contributions must have shape (n, {N}, {C}) to match residual {r.shape}; got {D.shape}")
        flat = D.reshape(D.shape[0], -1).astype(np.float64)
        gram = flat @ flat.T
        linear = flat @ r.ravel().astype(np.float64)
    else:
        if not isinstance(factors, (tuple, list)) or len(factors) != 2:
            raise TypeError(f"factors must be a pair (activations, readouts); got {_checks.describe(factors)}")
        A = _checks.array(factors[0], "factors[0] (activations)", ndim=3, kind="float").astype(np.float64)
        R = _checks.array(factors[1], "factors[1] (readouts)", ndim=3, kind="float").astype(np.float64)
        if A.shape[2] != N or R.shape[2] != C or A.shape[:2] != R.shape[:2]:
            raise ValueError(
                f"factors must have shapes (K, n, {N}) and (K, n, {C}) with the same K and n; got {A.shape} and {R.shape}"
            )
        K = A.shape[0]
        gram = sum((A[k] @ A[l].T) * (R[k] @ R[l].T) for k in range(K) for l in range(K))
        linear = sum(np.einsum("ax,ax->a", A[k], R[k] @ r.T.astype(np.float64)) for k in range(K))
    singles = -(2.0 / M) * linear - np.diag(gram) / M
    pairs = -(2.0 / M) * gram
    np.fill_diagonal(pairs, 0.0)
    return singles, 0.5 * (pairs + pairs.T)


def pair_levels(levels: Sequence[Any], n_players: int) -> np.ndarray:
    """The level of the smallest block holding each pair of players (their lowest common ancestor).

    ``levels``: nested partitions (see ``check_levels``), any number of players. Returns
    ``(n, n)`` ints in ``[0, L-2]`` off the diagonal (0: the pair is split at the top) and
    ``L-1`` on the diagonal (``L`` levels after ``check_levels``).
    """
    levs = check_levels(levels, n_players)
    D = np.zeros((n_players, n_players), np.int64)
    for k, lev in enumerate(levs):
        D[lev[:, None] == lev[None, :]] = k
    return D


@partial(jax.jit, static_argnames="levels")
def _relabelled_masses(D, perm, w, iu0, iu1, levels):
    """``(G, R * levels)`` per-level sums of the pair weights ``w`` (``(G, n_pairs)``) in every
    relabelled tree: one gather and one segment sum over ``R * n_pairs`` entries."""
    depth = D[perm[:, iu0], perm[:, iu1]]  # (R, n_pairs): level of each pair in each relabelled tree
    seg = (depth + levels * jnp.arange(perm.shape[0])[:, None]).ravel()
    segments = perm.shape[0] * levels
    return jax.vmap(lambda wg: jax.ops.segment_sum(jnp.broadcast_to(wg, depth.shape).ravel(), seg, num_segments=segments))(w)


def pairwise_mass_by_level(
    singles: Any, pairs: Any, levels: Sequence[Any], *, absolute: bool = False, relabel: Any = None
) -> np.ndarray:
    """Dividend mass of a pairwise game at each level of a player tree.

    A pair is charged to the level of its lowest common ancestor (as ``mass_by_level`` does
    for coalitions of any order); the singletons fill the last level. ``out[0]`` is the mass
    across the top split, ``out[-1]`` the first-order mass; signed masses sum to ``v(N)``.

    Args:
        singles: ``(n,)`` or ``(G, n)`` (a stack of ``G`` games on the same players).
        pairs: ``(n, n)`` or ``(G, n, n)``, symmetric (the diagonal is ignored).
        levels: nested partitions of the ``n`` players, coarse to fine.
        absolute: sum ``|m|`` instead of ``m``.
        relabel: optional ``(R, n)`` permutations of ``range(n)``; row ``r`` moves player ``a``
            to leaf ``relabel[r, a]`` of the same tree (a random tree with the same shape).

    Returns:
        ``(L,)`` (or ``(G, L)``), or with ``relabel`` ``(R, L)`` (or ``(G, R, L)``).
    """
    s = _checks.array(singles, "singles", ndim=(1, 2))
    n = s.shape[-1]
    P = _checks.array(pairs, "pairs", ndim=s.ndim + 1)
    if P.shape != s.shape + (n,):
        raise ValueError(f"pairs must have shape {s.shape + (n,)} to match singles {s.shape}; got {P.shape}")
    _checks.boolean(absolute, "absolute")
    D = pair_levels(levels, n)
    L = int(D[0, 0]) + 1
    iu = np.triu_indices(n, 1)
    w = P[..., iu[0], iu[1]].reshape(-1, iu[0].size)  # (G, n_pairs)
    first = s.reshape(-1, n)
    if absolute:
        w, first = np.abs(w), np.abs(first)
    if relabel is None:
        out = np.stack([np.bincount(D[iu], weights=wg, minlength=L) for wg in w])
        out[:, L - 1] = first.sum(axis=1)
        return out.reshape(s.shape[:-1] + (L,))
    perm = _checks.array(relabel, "relabel", ndim=2, kind="int")
    if perm.shape[1] != n or np.any(np.sort(perm, axis=1) != np.arange(n)[None, :]):
        raise ValueError(f"relabel must hold permutations of range({n}) in its rows; got shape {perm.shape}")
    out = np.asarray(_relabelled_masses(jnp.asarray(D, jnp.int32), jnp.asarray(perm, jnp.int32), jnp.asarray(w),
                                        jnp.asarray(iu[0], jnp.int32), jnp.asarray(iu[1], jnp.int32), L))
    out = out.astype(np.float64).reshape(w.shape[0], perm.shape[0], L)
    out[:, :, L - 1] = first.sum(axis=1)[:, None]
    return out.reshape(s.shape[:-1] + out.shape[1:])


def level_height(masses: Any) -> np.ndarray | float:
    """Mean height of dividend mass in a tree: ``sum_l h_l |M_l| / sum_l |M_l|``.

    ``masses``: ``(L,)`` or ``(R, L)`` per-level masses, root first, singletons last (from
    ``pairwise_mass_by_level`` or ``mass_by_level``); ``h_l = (L-1-l)/(L-1)``: 1 at the root,
    0 for the singletons. Returns a float or ``(R,)``.
    """
    Mx = _checks.array(masses, "masses", ndim=(1, 2))
    if Mx.shape[-1] < 2:
        raise ValueError(f"masses must have at least two levels (root and singletons); got shape {Mx.shape}")
    L = Mx.shape[-1]
    h = (L - 1 - np.arange(L)) / (L - 1)
    total = np.abs(Mx).sum(axis=-1)
    if np.any(total == 0):
        raise ValueError("masses must not be all zero at a level structure: the height of no mass is undefined")
    out = (np.abs(Mx) * h).sum(axis=-1) / total
    return float(out) if Mx.ndim == 1 else out


# ----------------------------------------------------------------------------------------
# second-order structure: gradient and Hessian blocks per player
# ----------------------------------------------------------------------------------------


def _player_masks(labels: Any, n: int) -> list[Any]:
    return [jax.tree_util.tree_map(lambda l, a=a: (jnp.asarray(l) == a), labels) for a in range(n)]


def gradient_hessian_coupling(loss_fn: Callable[[Any], jnp.ndarray], params: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-player gradient norms and the Hessian cross-blocks along the gradient.

    Returns ``(gradient_sq (n,), coupling (n, n))`` with ``gradient_sq[a] = |g_a|^2`` and
    ``coupling[a, b] = g_a^T H_ab g_b`` (``H`` the loss Hessian, ``g_a`` the gradient restricted
    to player ``a``), from ``n`` exact Hessian-vector products (``jvp`` of ``grad``).
    Second-order expansion of the loss game: ``m({a}) = eta |g_a|^2 - eta^2/2 coupling[a, a]
    + O(eta^3)``, ``m({a, b}) = -eta^2 coupling[a, b] + O(eta^3)``, ``m(T) = O(eta^3)`` for
    ``|T| >= 3``.
    """
    _checks.function(loss_fn, "loss_fn", "loss_fn(params) -> scalar")
    _checks.params_tree(params, "params")
    _check_labels(labels, params)
    n = count_players(labels)

    def build():
        grad_fn = jax.grad(loss_fn)
        return jax.jit(grad_fn), jax.jit(lambda p, v: jax.jvp(grad_fn, (p,), (v,))[1])

    grad_jit, hvp = _cached(("hvp", loss_fn), build)
    g = grad_jit(params)
    _checks.finite_tree(g, "the gradient of loss_fn at params")
    masks = _player_masks(labels, n)
    restricted = [jax.tree_util.tree_map(lambda x, m: x * m.astype(x.dtype), g, mk) for mk in masks]
    gflat = [ravel_pytree(r)[0] for r in restricted]
    hg = [ravel_pytree(hvp(params, r))[0] for r in restricted]
    gradient_sq = np.array([float(gf @ gf) for gf in gflat])
    coupling = np.array([[float(gflat[a] @ hg[b]) for b in range(n)] for a in range(n)])
    if not np.all(np.isfinite(coupling)):
        raise ValueError("loss_fn has a NaN or inf Hessian-vector product at params")
    return gradient_sq, 0.5 * (coupling + coupling.T)


# ----------------------------------------------------------------------------------------
# player similarities from the three kernels, player trees
# ----------------------------------------------------------------------------------------


def _flat_labels(params: Any, labels: Any) -> np.ndarray:
    return np.asarray(ravel_pytree(jax.tree_util.tree_map(lambda l, p: jnp.asarray(l, jnp.int32) * jnp.ones((), jnp.int32), labels, params))[0])


def group_grams(features: Any, flat_labels: Any, n_groups: int, *, centre: bool = False) -> np.ndarray:
    """Per-group Gram matrices of per-example features over the parameters.

    Args:
        features: ``(N, P)`` or ``(N, C, P)`` (a Jacobian; class-mean collapsed).
        flat_labels: ``(P,)`` group of every parameter (``-1`` ignored).
        n_groups: number of groups.
        centre: subtract the mean over examples first (a covariance, seed 001 §1).

    Returns:
        ``(n_groups, N, N)``, ``G_a[x, x'] = (1/C) sum_c sum_{mu in a} F[x, c, mu] F[x', c, mu]``.
    """
    F = _checks.array(features, "features", ndim=(2, 3), kind="real").astype(np.float64)
    if F.ndim == 2:
        F = F[:, None, :]
    n_groups = _checks.integer(n_groups, "n_groups", low=1)
    _checks.boolean(centre, "centre")
    lab = _checks.array(flat_labels, "flat_labels", kind="int")
    if lab.shape != (F.shape[-1],):
        raise ValueError(f"flat_labels must have shape ({F.shape[-1]},) (one per parameter); got {lab.shape}")
    if lab.min() < -1 or lab.max() >= n_groups:
        raise ValueError(f"flat_labels must lie in [-1, n_groups - 1 = {n_groups - 1}]; got [{lab.min()}, {lab.max()}]")
    if centre:
        F = F - F.mean(axis=0, keepdims=True)
    C = F.shape[1]
    # sort the parameters by group once, so that every group is a contiguous slice
    order = np.argsort(lab, kind="stable")
    F, lab = F[:, :, order], lab[order]
    starts = np.searchsorted(lab, np.arange(n_groups + 1))
    out = np.empty((n_groups, F.shape[0], F.shape[0]))
    for a in range(n_groups):
        Fa = F[:, :, starts[a] : starts[a + 1]].reshape(F.shape[0], -1)
        out[a] = Fa @ Fa.T / C
    return out


def alignment(grams: Any, *, centre: bool = False) -> np.ndarray:
    """Kernel alignment between groups: ``A_ab = <K_a, K_b>_F / (|K_a|_F |K_b|_F)``.

    ``grams``: ``(n, N, N)``; ``centre=True`` double-centres each Gram first (CKA,
    Kornblith et al. 2019). Returns ``(n, n)`` with unit diagonal. A group whose (centred)
    Gram is zero has no defined alignment and raises.
    """
    K = _checks.array(grams, "grams", ndim=3).astype(np.float64)
    if K.shape[1] != K.shape[2]:
        raise ValueError(f"grams must be (n, N, N); got shape {K.shape}")
    _checks.boolean(centre, "centre")
    raw = np.einsum("aij,aij->a", K, K)  # squared norms before centring: the scale of rounding
    if centre:
        N = K.shape[1]
        H = np.eye(N) - 1.0 / N
        K = H[None] @ K @ H[None]
    flat = K.reshape(K.shape[0], -1)
    inner = flat @ flat.T
    sq = np.diag(inner)
    # zero, or zero up to the rounding of centring (relative 1e-12 of the uncentred norm)
    zero = np.flatnonzero((raw == 0) | (sq <= 1e-24 * raw))
    if zero.size:
        raise ValueError(f"grams must be nonzero{' after centring' if centre else ''}; groups {zero[:10].tolist()} have a zero Gram")
    norm = np.sqrt(sq)
    return inner / norm[:, None] / norm[None, :]


def _count_groups(labels: Any) -> int:
    flat = _label_leaves(labels)
    if flat.size == 0 or flat.max() < 0:
        raise ValueError("labels assign no parameter to any player (every label is -1)")
    return int(flat.max()) + 1


def flat_labels(params: Any, labels: Any) -> np.ndarray:
    """The labels pytree flattened in the order of ``ravel_pytree(params)``: returns ``(P,)``."""
    _checks.params_tree(params, "params", finite=False)
    _check_labels(labels, params)
    return _flat_labels(params, labels)


def _jacobian(f: Callable, params: Any, x: jnp.ndarray) -> np.ndarray:
    """``(N, C, P)`` per-example Jacobian in ``ravel_pytree`` order (as ``helpers.ntk.jacobian``),
    jitted: one reverse pass per example and output, vmapped over the batch."""

    def per_example(p, xi):
        jac = jax.jacrev(lambda q: f(q, xi[None])[0])(p)
        return jnp.concatenate([leaf.reshape(leaf.shape[0], -1) for leaf in jax.tree_util.tree_leaves(jac)], axis=-1)

    return np.asarray(jax.jit(jax.vmap(per_example, in_axes=(None, 0)))(params, x))


def tangent_similarity(f: Callable, params: Any, x: Any, labels: Any) -> np.ndarray:
    """Players' similarity under the parameter-side eNTK ``J^T J`` aggregated per group.

    ``|J_a^T J_b|_F^2 = <K_a, K_b>_F`` with ``K_a = J_a J_a^T`` player ``a``'s tangent kernel;
    here ``K_a`` is class-mean collapsed on the batch ``x`` (``(N, ...)``) and normalised:
    returns the ``(n, n)`` alignment matrix. Any number of groups (no enumeration here), so it
    also serves to cluster hidden units before they are grouped into players.
    """
    _checks.function(f, "f", "f(params, x)")
    _checks.params_tree(params, "params")
    xa = _checks.array(x, "x", kind="float")
    _check_labels(labels, params)
    n = _count_groups(labels)
    out = f(params, jnp.asarray(xa[:1]))
    if np.ndim(out) != 2:
        raise ValueError(f"f must map a batch x (N, ...) to outputs (N, C); got outputs of shape {np.shape(out)}")
    J = _jacobian(f, params, jnp.asarray(xa))
    return alignment(group_grams(J, _flat_labels(params, labels), n))


def noise_similarity(per_example_loss: Callable, params: Any, x: Any, y: Any, labels: Any) -> np.ndarray:
    """Players' similarity under the gradient-noise covariance ``C = Cov_x(grad l_x)`` (seed 001 §1).

    ``|C_ab|_F^2 = <G_a, G_b>_F / N^2`` with ``G_a`` the centred Gram of player ``a``'s
    per-example gradients; each player's block is scaled to unit norm (a block-diagonal
    whitening, seed 001 §2). ``per_example_loss(params, x_i, y_i) -> scalar``; ``x``: ``(N, ...)``,
    ``y``: ``(N, ...)``. Returns ``(n, n)``.
    """
    _checks.function(per_example_loss, "per_example_loss", "per_example_loss(params, x_i, y_i) -> scalar")
    _checks.params_tree(params, "params")
    xa = _checks.array(x, "x", kind="float", min_len=2)
    ya = _checks.array(y, "y", kind="real")
    if ya.shape[0] != xa.shape[0]:
        raise ValueError(f"y must have one row per example of x ({xa.shape[0]}); got shape {ya.shape}")
    _check_labels(labels, params)
    n = _count_groups(labels)
    grads = jax.jit(jax.vmap(jax.grad(per_example_loss), in_axes=(None, 0, 0)))(params, jnp.asarray(xa), jnp.asarray(ya))
    _checks.finite_tree(grads, "the per-example gradients of per_example_loss")
    leaves = jax.tree_util.tree_leaves(grads)
    F = np.concatenate([np.asarray(l).reshape(l.shape[0], -1) for l in leaves], axis=1)
    return alignment(group_grams(F, _flat_labels(params, labels), n, centre=True), centre=False)


def hessian_similarity(loss_fn: Callable, params: Any, labels: Any) -> np.ndarray:
    """Players' similarity under the Hessian along the gradient:
    ``|g_a^T H_ab g_b| / sqrt(|g_a^T H_aa g_a| |g_b^T H_bb g_b|)``; returns ``(n, n)``."""
    _, c = gradient_hessian_coupling(loss_fn, params, labels)
    d = np.abs(np.diag(c))
    if np.any(d == 0):
        raise ValueError(
            f"loss_fn has zero curvature along the gradient of players {np.flatnonzero(d == 0)[:10].tolist()} at params: "
            "their Hessian similarity is undefined"
        )
    d = np.sqrt(d)
    return np.abs(c) / d[:, None] / d[None, :]


def _check_similarity(similarity: Any) -> np.ndarray:
    S = _checks.square(similarity, "similarity")
    if S.shape[0] < 2:
        raise ValueError(f"similarity must be a square (n, n) matrix with n >= 2; got shape {S.shape}")
    A = 0.5 * (np.abs(S) + np.abs(S).T)
    if np.any(A.sum(axis=1) <= 0):
        raise ValueError(f"similarity must give every player a positive total affinity; rows {np.flatnonzero(A.sum(axis=1) <= 0)[:10].tolist()} are zero")
    return A


def player_tree(similarity: Any, cuts: Sequence[int], *, dims: int | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """Hierarchical spectral clustering of the players into nested levels.

    The affinity ``|similarity|`` is normalised, ``D^{-1/2} A D^{-1/2}``; players are embedded
    with its leading ``dims`` eigenvectors scaled by their eigenvalues (a diffusion-map step,
    von Luxburg 2007; Coifman & Lafon 2006), and Ward linkage (``scipy.cluster.hierarchy``)
    builds the tree, cut at each count in ``cuts`` (increasing) into nested partitions.

    Returns ``(linkage (n-1, 4), levels)``: ``levels`` a list of ``(n,)`` label arrays, coarse
    to fine, one per cut (pass to ``winter_values`` / ``mass_by_level``).
    """
    A = _check_similarity(similarity)
    n = A.shape[0]
    cuts = _check_sequence(cuts, "cuts")
    if any(isinstance(c, bool) or not isinstance(c, (int, np.integer)) for c in cuts):
        raise TypeError(f"cuts must be integers (cluster counts); got {cuts!r}")
    cuts = [int(c) for c in cuts]
    if any(c < 1 or c > n for c in cuts) or cuts != sorted(cuts):
        raise ValueError(f"cuts must be increasing cluster counts in [1, {n}]; got {cuts}")
    if dims is not None:
        dims = _checks.integer(dims, "dims", low=1, high=n)
    d = A.sum(axis=1)
    Nrm = A / np.sqrt(d[:, None] * d[None, :])
    w, V = np.linalg.eigh(Nrm)
    order = np.argsort(w)[::-1]
    k = dims or max(2, n - 1)
    emb = V[:, order[:k]] * w[order[:k]][None, :]
    # fix the eigenvector signs so the tree does not depend on the eigensolver's sign choice
    emb = emb * np.where(emb[np.argmax(np.abs(emb), axis=0), np.arange(emb.shape[1])] < 0, -1.0, 1.0)[None, :]
    Z = hierarchy.linkage(emb, method="ward")
    return Z, [_cut(Z, n, c) for c in cuts]


def _cut(Z: np.ndarray, n: int, n_clusters: int) -> np.ndarray:
    """Partition after the first ``n - n_clusters`` merges of the linkage ``Z`` (nested in the
    count; computed from the merge order, since ``hierarchy.cut_tree`` can return non-nested
    cuts for some linkages)."""
    members = {i: [i] for i in range(n)}
    for step in range(n - n_clusters):
        a, b = int(Z[step, 0]), int(Z[step, 1])
        members[n + step] = members.pop(a) + members.pop(b)
    labels = np.empty(n, np.int64)
    for k, key in enumerate(sorted(members, key=lambda c: min(members[c]))):
        labels[members[key]] = k
    return labels


def flat_partition(features: Any, k: int, *, seed: int = 0) -> np.ndarray:
    """Flat k-means partition of the rows of ``features`` (``(n, d)``, e.g. rows of a
    gradient-similarity matrix; Michaud et al. 2023's flat clustering). Returns ``(n,)`` labels."""
    X = _checks.array(features, "features", ndim=2).astype(np.float64)
    k = _checks.integer(k, "k", low=1, high=X.shape[0])
    seed = _checks.integer(seed, "seed", low=0)
    best, best_inertia = None, np.inf
    for r in range(10):
        centroids, lab = kmeans2(X, k, minit="++", seed=np.random.default_rng([seed, r]))
        inertia = np.sum((X - centroids[lab]) ** 2)
        if inertia < best_inertia and np.unique(lab).size == k:
            best, best_inertia = lab, inertia
    if best is None:
        best = lab
    return np.unique(best, return_inverse=True)[1].astype(np.int64).reshape(-1)


def partition_agreement(a: Any, b: Any) -> float:
    """Rand index of two partitions of the same players: the fraction of player pairs on
    which they agree (same block in both, or different in both). ``(n,)``, ``(n,)`` -> float."""
    a = _checks.array(a, "a", ndim=1, kind="int")
    b = _checks.array(b, "b", ndim=1, kind="int")
    _checks.same_shape(a, b, "a", "b")
    if a.size < 2:
        raise ValueError(f"a must label at least two players (the Rand index counts pairs); got shape {a.shape}")
    same_a = a[:, None] == a[None, :]
    same_b = b[:, None] == b[None, :]
    iu = np.triu_indices(a.size, 1)
    return float(np.mean(same_a[iu] == same_b[iu]))
