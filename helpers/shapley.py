"""Shapley attribution of a gradient step over coalitions of parameters (seed 001 §3).

The game. Players are groups of parameters (hidden neurons with their weights, blocks of a
layer), labelled by an integer pytree ``labels`` with the structure of ``params`` (``-1``:
not a player, never moved). With ``g = grad L(theta)`` and ``g_S`` the gradient restricted to
the parameters of the players in ``S``, the value of a coalition is the loss decrease of one
gradient step of size ``eta`` taken by ``S`` alone,

    v(S) = L(theta) - L(theta - eta g_S),                                   (loss game)

or, for a scalar readout ``r``, the change ``v(S) = r(theta - eta g_S) - r(theta)`` that the
same restricted step produces in the readout (readout game). ``v(empty) = 0``.

Coalitions are bit masks: coalition ``s`` (an integer in ``[0, 2**n)``) holds player ``i``
iff bit ``i`` of ``s`` is set. A game is the array ``values`` of shape ``(2**n,)``.

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
* Player trees from kernels: per-player similarities from the tangent kernel (``J^T J``
  aggregated per group), the Hessian along the gradient, and the gradient-noise covariance
  (seed 001 §1-§2); a hierarchical spectral clustering of the players into nested levels
  (``scipy.cluster.hierarchy``); a flat k-means partition for comparison.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from scipy.cluster import hierarchy
from scipy.cluster.vq import kmeans2

__all__ = [
    "MAX_PLAYERS",
    "coalition_masks",
    "coalition_sizes",
    "unit_labels",
    "count_players",
    "step_game",
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


def _check_n(n_players: Any, name: str = "n_players") -> int:
    if isinstance(n_players, bool) or not isinstance(n_players, (int, np.integer)):
        raise TypeError(f"{name} must be an integer; got {type(n_players).__name__}")
    if not 1 <= n_players <= MAX_PLAYERS:
        raise ValueError(
            f"{name} must lie in [1, {MAX_PLAYERS}] (MAX_PLAYERS, the limit for exact enumeration "
            f"of 2**n coalitions); got {n_players}"
        )
    return int(n_players)


def _check_values(values: Any, name: str = "values") -> tuple[np.ndarray, int]:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size < 2 or v.size & (v.size - 1):
        raise ValueError(f"{name} must be a 1-d array of length 2**n (one value per coalition); got shape {v.shape}")
    n = v.size.bit_length() - 1
    if n > MAX_PLAYERS:
        raise ValueError(f"{name} encodes {n} players, more than MAX_PLAYERS = {MAX_PLAYERS}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} holds NaN or inf")
    return v, n


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
    assignment = np.asarray(assignment)
    if assignment.ndim != 1 or not np.issubdtype(assignment.dtype, np.integer):
        raise ValueError(f"assignment must be a 1-d integer array (player of each unit); got {assignment.dtype} {assignment.shape}")
    paths = {}
    leaves_with_path = jax.tree_util.tree_flatten_with_path(params)[0]
    for path, leaf in leaves_with_path:
        key = "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
        paths[key] = np.shape(leaf)
    unknown = sorted(set(unit_axes) - set(paths))
    if unknown:
        raise ValueError(f"unit_axes names leaves {unknown} not in params (leaves: {sorted(paths)})")

    def label(path, leaf):
        key = "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
        shape = np.shape(leaf)
        if key not in unit_axes:
            return np.full(shape, -1, np.int32)
        axis = unit_axes[key]
        if shape[axis] != assignment.size:
            raise ValueError(
                f"leaf {key!r} has {shape[axis]} units along axis {axis} but assignment has {assignment.size}"
            )
        idx = [None] * len(shape)
        idx[axis] = slice(None)
        return np.broadcast_to(assignment[tuple(idx)], shape).astype(np.int32)

    return jax.tree_util.tree_map_with_path(label, params)


def count_players(labels: Any) -> int:
    """Number of players ``max(label) + 1`` of a label pytree; checks every player owns a parameter."""
    flat = np.concatenate([np.ravel(np.asarray(l)) for l in jax.tree_util.tree_leaves(labels)])
    if flat.size == 0 or flat.max() < 0:
        raise ValueError("labels assign no parameter to any player")
    n = int(flat.max()) + 1
    missing = sorted(set(range(n)) - set(np.unique(flat[flat >= 0]).tolist()))
    if missing:
        raise ValueError(f"labels name players 0..{n - 1} but players {missing} own no parameter")
    if flat.min() < -1:
        raise ValueError(f"labels must be >= -1 (-1: not a player); got {flat.min()}")
    return _check_n(n, "number of players in labels")


_EVALUATORS: dict = {}


def _game_evaluator(loss_fn: Callable, readout: Callable | None) -> Callable:
    """A jitted ``(params, idx, eta, masks) -> values`` for one (loss, readout) pair, cached so
    that games at many checkpoints compile once; params are arguments, never constants."""
    key = (loss_fn, readout)
    if key in _EVALUATORS:
        return _EVALUATORS[key]
    objective = loss_fn if readout is None else readout

    def values(params, idx, eta, masks):
        grads = jax.grad(loss_fn)(params)
        base = objective(params)

        def value(mask):
            m = jnp.concatenate([mask, jnp.zeros((1,), mask.dtype)])
            moved = jax.tree_util.tree_map(lambda p, g, i: p - eta * g * m[i].astype(g.dtype), params, grads, idx)
            new = objective(moved)
            return base - new if readout is None else new - base

        return jax.vmap(value)(masks)

    if len(_EVALUATORS) > 64:
        _EVALUATORS.clear()
    _EVALUATORS[key] = jax.jit(values)
    return _EVALUATORS[key]


def step_game(
    loss_fn: Callable[[Any], jnp.ndarray],
    params: Any,
    labels: Any,
    *,
    step_size: float,
    readout: Callable[[Any], jnp.ndarray] | None = None,
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
        chunk: coalitions evaluated per ``vmap`` call.

    Returns:
        ``(2**n,)`` float64, ``values[s]`` for the coalition with bit mask ``s``; ``values[0] = 0``.
    """
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable; got {type(loss_fn).__name__}")
    if readout is not None and not callable(readout):
        raise TypeError(f"readout must be callable or None; got {type(readout).__name__}")
    if np.ndim(step_size) != 0 or not np.isfinite(float(step_size)) or float(step_size) <= 0:
        raise ValueError(f"step_size must be a positive number; got {step_size!r}")
    if jax.tree_util.tree_structure(labels) != jax.tree_util.tree_structure(params):
        raise ValueError("labels must have the tree structure of params")
    for l, p in zip(jax.tree_util.tree_leaves(labels), jax.tree_util.tree_leaves(params)):
        if np.shape(l) != np.shape(p):
            raise ValueError(f"labels leaf of shape {np.shape(l)} does not match params leaf {np.shape(p)}")
    n = count_players(labels)
    # label -1 -> index n, a padding entry that is always False
    idx = jax.tree_util.tree_map(lambda l: jnp.where(jnp.asarray(l) < 0, n, jnp.asarray(l)), labels)
    batch = _game_evaluator(loss_fn, readout)
    masks = coalition_masks(n)
    eta = jnp.asarray(step_size, dtype=jax.tree_util.tree_leaves(params)[0].dtype)
    out = [np.asarray(batch(params, idx, eta, jnp.asarray(masks[i : i + chunk]))) for i in range(0, masks.shape[0], chunk)]
    values = np.concatenate(out).astype(np.float64)
    values[0] = 0.0
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
        n_players: ``n``.

    Returns:
        list of ``(n,)`` int arrays, starting with the grand coalition (all zeros) and ending
        with the singletons (``arange(n)``), duplicates removed; blocks relabelled ``0..B-1``.
    """
    n = _check_n(n_players)
    out = [np.zeros(n, np.int64)]
    for k, lev in enumerate(levels):
        a = np.asarray(lev)
        if a.shape != (n,) or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"levels[{k}] must be an integer array of shape ({n},) (a block per player); got {a.dtype} {a.shape}")
        a = np.unique(a, return_inverse=True)[1].astype(np.int64)
        prev = out[-1]
        # refinement: every block of `a` must lie inside one block of `prev`
        for b in np.unique(a):
            parents = np.unique(prev[a == b])
            if parents.size != 1:
                raise ValueError(
                    f"levels[{k}] does not refine the level above it: its block {b} straddles blocks {parents.tolist()}; "
                    "the levels must be nested partitions of the players (coarse to fine)"
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
    return winter_values(values, [partition])


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
    part = np.asarray(partition)
    if part.shape != (n,) or not np.issubdtype(part.dtype, np.integer):
        raise ValueError(f"partition must be an integer array of shape ({n},); got {part.dtype} {part.shape}")
    part = np.unique(part, return_inverse=True)[1]
    B = part.max() + 1
    block_bits = np.array([int(np.sum(1 << np.flatnonzero(part == b))) for b in range(B)], dtype=np.int64)
    rmasks = coalition_masks(B)
    s = (rmasks * block_bits[None, :]).sum(axis=1)
    return v[s]


# ----------------------------------------------------------------------------------------
# second-order structure: gradient and Hessian blocks per player
# ----------------------------------------------------------------------------------------


def _player_masks(labels: Any, n: int) -> list[Any]:
    return [jax.tree_util.tree_map(lambda l, a=a: (jnp.asarray(l) == a), labels) for a in range(n)]


_HVPS: dict = {}


def gradient_hessian_coupling(loss_fn: Callable[[Any], jnp.ndarray], params: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-player gradient norms and the Hessian cross-blocks along the gradient.

    Returns ``(gradient_sq (n,), coupling (n, n))`` with ``gradient_sq[a] = |g_a|^2`` and
    ``coupling[a, b] = g_a^T H_ab g_b`` (``H`` the loss Hessian, ``g_a`` the gradient restricted
    to player ``a``), from ``n`` exact Hessian-vector products (``jvp`` of ``grad``).
    Second-order expansion of the loss game: ``m({a}) = eta |g_a|^2 - eta^2/2 coupling[a, a]
    + O(eta^3)``, ``m({a, b}) = -eta^2 coupling[a, b] + O(eta^3)``, ``m(T) = O(eta^3)`` for
    ``|T| >= 3``.
    """
    n = count_players(labels)
    if loss_fn not in _HVPS:
        grad_fn = jax.grad(loss_fn)
        _HVPS[loss_fn] = (jax.jit(grad_fn), jax.jit(lambda p, v: jax.jvp(grad_fn, (p,), (v,))[1]))
    grad_jit, hvp = _HVPS[loss_fn]
    g = grad_jit(params)
    masks = _player_masks(labels, n)
    restricted = [jax.tree_util.tree_map(lambda x, m: x * m.astype(x.dtype), g, mk) for mk in masks]
    gflat = [ravel_pytree(r)[0] for r in restricted]
    hg = [ravel_pytree(hvp(params, r))[0] for r in restricted]
    gradient_sq = np.array([float(gf @ gf) for gf in gflat])
    coupling = np.array([[float(gflat[a] @ hg[b]) for b in range(n)] for a in range(n)])
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
    F = np.asarray(features, dtype=np.float64)
    if F.ndim == 2:
        F = F[:, None, :]
    if F.ndim != 3:
        raise ValueError(f"features must be (N, P) or (N, C, P); got shape {F.shape}")
    lab = np.asarray(flat_labels)
    if lab.shape != (F.shape[-1],):
        raise ValueError(f"flat_labels must have shape ({F.shape[-1]},) (one per parameter); got {lab.shape}")
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
    Kornblith et al. 2019). Returns ``(n, n)`` with unit diagonal.
    """
    K = np.asarray(grams, dtype=np.float64)
    if K.ndim != 3 or K.shape[1] != K.shape[2]:
        raise ValueError(f"grams must be (n, N, N); got shape {K.shape}")
    if centre:
        N = K.shape[1]
        H = np.eye(N) - 1.0 / N
        K = H[None] @ K @ H[None]
    flat = K.reshape(K.shape[0], -1)
    inner = flat @ flat.T
    norm = np.sqrt(np.clip(np.diag(inner), 1e-300, None))
    return inner / norm[:, None] / norm[None, :]


def _count_groups(labels: Any) -> int:
    flat = np.concatenate([np.ravel(np.asarray(l)) for l in jax.tree_util.tree_leaves(labels)])
    if flat.size == 0 or flat.max() < 0:
        raise ValueError("labels assign no parameter to any player")
    return int(flat.max()) + 1


def flat_labels(params: Any, labels: Any) -> np.ndarray:
    """The labels pytree flattened in the order of ``ravel_pytree(params)``: returns ``(P,)``."""
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
    n = _count_groups(labels)
    J = _jacobian(f, params, jnp.asarray(x))
    return alignment(group_grams(J, _flat_labels(params, labels), n))


def noise_similarity(per_example_loss: Callable, params: Any, x: Any, y: Any, labels: Any) -> np.ndarray:
    """Players' similarity under the gradient-noise covariance ``C = Cov_x(grad l_x)`` (seed 001 §1).

    ``|C_ab|_F^2 = <G_a, G_b>_F / N^2`` with ``G_a`` the centred Gram of player ``a``'s
    per-example gradients; each player's block is scaled to unit norm (a block-diagonal
    whitening, seed 001 §2). ``per_example_loss(params, x_i, y_i) -> scalar``; ``x``: ``(N, ...)``,
    ``y``: ``(N, ...)``. Returns ``(n, n)``.
    """
    n = _count_groups(labels)
    grads = jax.jit(jax.vmap(jax.grad(per_example_loss), in_axes=(None, 0, 0)))(params, x, y)
    leaves = jax.tree_util.tree_leaves(grads)
    F = np.concatenate([np.asarray(l).reshape(l.shape[0], -1) for l in leaves], axis=1)
    return alignment(group_grams(F, _flat_labels(params, labels), n, centre=True))


def hessian_similarity(loss_fn: Callable, params: Any, labels: Any) -> np.ndarray:
    """Players' similarity under the Hessian along the gradient:
    ``|g_a^T H_ab g_b| / sqrt(|g_a^T H_aa g_a| |g_b^T H_bb g_b|)``; returns ``(n, n)``."""
    _, c = gradient_hessian_coupling(loss_fn, params, labels)
    d = np.sqrt(np.clip(np.abs(np.diag(c)), 1e-300, None))
    return np.abs(c) / d[:, None] / d[None, :]


def _check_similarity(similarity: Any) -> np.ndarray:
    S = np.asarray(similarity, dtype=np.float64)
    if S.ndim != 2 or S.shape[0] != S.shape[1] or S.shape[0] < 2:
        raise ValueError(f"similarity must be a square (n, n) matrix with n >= 2; got shape {S.shape}")
    if not np.all(np.isfinite(S)):
        raise ValueError("similarity holds NaN or inf")
    return 0.5 * (np.abs(S) + np.abs(S).T)


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
    cuts = [int(c) for c in cuts]
    if any(c < 1 or c > n for c in cuts) or cuts != sorted(cuts):
        raise ValueError(f"cuts must be increasing cluster counts in [1, {n}]; got {cuts}")
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
    X = np.asarray(features, dtype=np.float64)
    if X.ndim != 2 or not 1 <= k <= X.shape[0]:
        raise ValueError(f"features must be (n, d) and k in [1, n]; got shape {X.shape}, k={k}")
    best, best_inertia = None, np.inf
    for r in range(10):
        centroids, lab = kmeans2(X, k, minit="++", seed=np.random.default_rng([seed, r]))
        inertia = np.sum((X - centroids[lab]) ** 2)
        if inertia < best_inertia and np.unique(lab).size == k:
            best, best_inertia = lab, inertia
    if best is None:
        best = lab
    return np.unique(best, return_inverse=True)[1].astype(np.int64)


def partition_agreement(a: Any, b: Any) -> float:
    """Rand index of two partitions of the same players: the fraction of player pairs on
    which they agree (same block in both, or different in both). ``(n,)``, ``(n,)`` -> float."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"partitions must be 1-d arrays of one shape; got {a.shape} and {b.shape}")
    same_a = a[:, None] == a[None, :]
    same_b = b[:, None] == b[None, :]
    iu = np.triu_indices(a.size, 1)
    return float(np.mean(same_a[iu] == same_b[iu]))
