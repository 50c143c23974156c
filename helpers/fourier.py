"""Fourier feature families on the p x p torus and the graph-smoothness rotation (seed 002 App. C, D).

The inputs of modular addition are the ``p**2`` pairs ``(a, b)``, stored in row-major order
``index = a * p + b`` (as in ``helpers.modular.make_data``). A function on the inputs is a
vector of length ``p**2``, i.e. a function on the torus ``Z_p x Z_p``. This module builds

* the graph Laplacians of the torus along a direction ``(da, db)`` (seed 002 eqs. 19-22):
  ``v^T L v = sum_{a,b} (v[a, b] - v[a + da, b + db])**2`` with indices mod p;
* the Fourier feature families ``(cos 2 pi k s / p, sin 2 pi k s / p)`` for ``s`` one of
  ``a``, ``b``, ``a + b``, ``a - b`` and ``k = 1 .. floor(p/2)`` (seed 002 eqs. 7-9);
* the squared overlap of a basis with those families (the heatmaps of seed 002 Figs 4-5) and a
  scalar score (mean over basis vectors of the largest overlap);
* the two-stage Laplacian rotation of a subspace (seed 002 App. C): diagonalise one Laplacian
  inside the subspace (Rayleigh-Ritz), keep its smoothest directions, and diagonalise a second
  Laplacian inside those;
* a graph learned from the rows of a kernel (k nearest neighbours by cosine similarity), for
  the "learned prior" variant suggested in seed 002 §5, footnote 7.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "DIRECTIONS",
    "cycle_laplacian",
    "torus_laplacian",
    "fourier_family",
    "family_overlaps",
    "overlap_score",
    "rayleigh_ritz_rotation",
    "two_stage_rotation",
    "knn_graph_laplacian",
]

# The four directions of the paper: a-axis (eq. 19), b-axis (eq. 20), sum diagonal (eq. 21),
# difference diagonal (eq. 22). A step (da, db) on the torus; the Fourier variable that is
# constant along the "other" family is the one this Laplacian cannot see.
DIRECTIONS = {"a": (1, 0), "b": (0, 1), "sum": (1, 1), "diff": (1, -1)}


def _check_p(p) -> int:
    if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 3:
        raise ValueError(f"p must be an integer >= 3; got {p!r}")
    return int(p)


def cycle_laplacian(p: int) -> np.ndarray:
    """The unnormalised Laplacian ``L_1`` of the p-cycle: 2 on the diagonal, -1 on the
    (cyclic) off-diagonals (seed 002 App. C). Returns ``(p, p)``."""
    p = _check_p(p)
    eye = np.eye(p)
    shift = np.roll(eye, 1, axis=1)
    return 2 * eye - shift - shift.T


def _shift_matrix(p: int, da: int, db: int) -> np.ndarray:
    """``(S v)[a, b] = v[a + da, b + db]`` on the row-major torus, ``(p**2, p**2)``."""
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    src = (a.ravel() * p + b.ravel())
    dst = ((a.ravel() + da) % p) * p + (b.ravel() + db) % p
    S = np.zeros((p * p, p * p))
    S[src, dst] = 1.0
    return S


def torus_laplacian(p: int, direction: str | tuple[int, int]) -> np.ndarray:
    """The Laplacian of the p x p torus along one direction (seed 002 eqs. 19-22).

    ``v^T L v = sum_{a,b} (v[a, b] - v[a + da, b + db])**2`` (indices mod p), so
    ``L = (I - S)^T (I - S)`` with ``S`` the shift by ``(da, db)``. For ``"a"`` this is
    ``L_1 (x) I_p`` and for ``"b"`` it is ``I_p (x) L_1`` (row-major index ``a * p + b``).

    Args:
        p: the modulus (>= 3).
        direction: ``"a"``, ``"b"``, ``"sum"``, ``"diff"`` or a step ``(da, db)``.

    Returns:
        ``(p**2, p**2)`` symmetric positive semi-definite matrix.
    """
    p = _check_p(p)
    if isinstance(direction, str):
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {sorted(DIRECTIONS)} or a step (da, db); got {direction!r}")
        da, db = DIRECTIONS[direction]
    else:
        try:
            da, db = (int(s) for s in direction)
        except (TypeError, ValueError) as err:
            raise ValueError(f"direction must be one of {sorted(DIRECTIONS)} or a step (da, db); got {direction!r}") from err
        if da % p == 0 and db % p == 0:
            raise ValueError(f"direction {direction!r} is the zero step mod {p}; the Laplacian would vanish")
    D = np.eye(p * p) - _shift_matrix(p, da, db)
    return D.T @ D


def _variable(p: int, family: str) -> np.ndarray:
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    a, b = a.ravel(), b.ravel()
    table = {"a": a, "b": b, "sum": a + b, "diff": a - b}
    if family not in table:
        raise ValueError(f"family must be one of {sorted(table)}; got {family!r}")
    return table[family]


def fourier_family(p: int, family: str) -> np.ndarray:
    """Unit-norm Fourier features of one family on the torus (seed 002 eq. 9, App. D).

    Args:
        p: odd modulus.
        family: ``"a"``, ``"b"``, ``"sum"`` (``a + b``) or ``"diff"`` (``a - b``).

    Returns:
        ``(floor(p/2), 2, p**2)``: entry ``[k-1, 0]`` is ``cos(2 pi k s / p)`` and ``[k-1, 1]`` is
        ``sin(2 pi k s / p)`` over the inputs (row-major ``a * p + b``), each normalised to unit
        length. For odd p the ``2 floor(p/2)`` vectors of a family are orthonormal.
    """
    p = _check_p(p)
    if p % 2 == 0:
        raise ValueError(f"p must be odd (the cos/sin pairs are orthonormal only then); got {p}")
    s = _variable(p, family)
    k = np.arange(1, p // 2 + 1)[:, None]
    phase = 2 * np.pi * k * s[None, :] / p
    feats = np.stack([np.cos(phase), np.sin(phase)], axis=1)
    return feats / np.linalg.norm(feats, axis=-1, keepdims=True)


def _check_basis(basis, name: str = "basis") -> np.ndarray:
    basis = np.asarray(basis, dtype=np.float64)
    if basis.ndim != 2:
        raise ValueError(f"{name} must be (N, k) with one basis vector per column; got shape {basis.shape}")
    if not np.all(np.isfinite(basis)):
        raise ValueError(f"{name} contains NaN or inf")
    return basis


def family_overlaps(basis, family: np.ndarray) -> np.ndarray:
    """Squared overlap of each basis vector with each ``(cos, sin)`` pair of a family.

    ``overlap[j, k] = (v_j . cos_k)**2 + (v_j . sin_k)**2`` for unit ``v_j``: the largest
    squared correlation of ``v_j`` with a phase-shifted cosine of frequency ``k`` (seed 002
    §4.2 footnote 5). Columns of ``basis`` are normalised first.

    Args:
        basis: ``(N, k)`` columns spanning a subspace (e.g. an eNTK cliff).
        family: ``(m, 2, N)`` from ``fourier_family`` (or several families concatenated on
            the first axis).

    Returns:
        ``(k, m)`` with entries in ``[0, 1]``.
    """
    basis = _check_basis(basis)
    family = np.asarray(family, dtype=np.float64)
    if family.ndim != 3 or family.shape[1] != 2 or family.shape[2] != basis.shape[0]:
        raise ValueError(
            f"family must be (m, 2, N) with N = {basis.shape[0]} rows of basis; got shape {family.shape}"
        )
    norms = np.linalg.norm(basis, axis=0)
    if np.any(norms == 0):
        raise ValueError("basis has a zero column")
    unit = basis / norms
    proj = np.einsum("mcn,nj->jmc", family, unit)
    return (proj**2).sum(axis=-1)


def overlap_score(overlaps) -> float:
    """Mean over basis vectors (rows) of the largest overlap with any family member.

    1 when every basis vector lies inside a single ``(cos k, sin k)`` pair; about
    ``1 / (number of pairs it is spread over)`` for a mixed basis.
    """
    overlaps = np.asarray(overlaps, dtype=np.float64)
    if overlaps.ndim != 2 or overlaps.size == 0:
        raise ValueError(f"overlaps must be a non-empty (k, m) matrix; got shape {overlaps.shape}")
    return float(overlaps.max(axis=1).mean())


def _check_laplacian(L, n: int, name: str) -> np.ndarray:
    L = np.asarray(L, dtype=np.float64)
    if L.shape != (n, n):
        raise ValueError(f"{name} must be ({n}, {n}) to act on the basis vectors; got shape {L.shape}")
    if not np.all(np.isfinite(L)):
        raise ValueError(f"{name} contains NaN or inf")
    if np.abs(L - L.T).max() > 1e-8 * max(np.abs(L).max(), 1.0):
        raise ValueError(f"{name} must be symmetric")
    return L


def rayleigh_ritz_rotation(basis, laplacian) -> tuple[np.ndarray, np.ndarray]:
    """Rotate a subspace into the eigenbasis of a Laplacian compressed onto it.

    With ``c`` an orthonormal basis of the span (columns of ``basis`` are orthonormalised
    first), ``A = c^T L c = U diag(s) U^T`` and the rotated basis is ``c U``, sorted from the
    smoothest (smallest ``s``) to the roughest (seed 002 App. C step 2).

    Args:
        basis: ``(N, k)``.
        laplacian: ``(N, N)`` symmetric.

    Returns:
        ``(rotated (N, k), smoothness (k,) ascending)``.
    """
    basis = _check_basis(basis)
    L = _check_laplacian(laplacian, basis.shape[0], "laplacian")
    c, _ = np.linalg.qr(basis)
    A = c.T @ L @ c
    s, U = np.linalg.eigh((A + A.T) / 2)
    return c @ U, s


def two_stage_rotation(basis, first, second, *, keep: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The two-stage per-axis graph-smoothness rotation (seed 002 App. C; App. D for sum/diff).

    1. Diagonalise ``first`` inside the span of ``basis`` (``rayleigh_ritz_rotation``).
    2. Keep the ``keep`` smoothest directions (default: half of them, the family that ``first``
       cannot see) and diagonalise ``second`` inside their span.

    Args:
        basis: ``(N, k)`` spanning the subspace (an eNTK cliff).
        first, second: ``(N, N)`` Laplacians (e.g. ``L_a`` then ``L_b``).
        keep: number of directions passed to stage 2, ``1 <= keep <= k``.

    Returns:
        ``(rotated (N, k), smoothness (k,))``: the first ``keep`` columns are the stage-2
        directions sorted by smoothness under ``second``, the rest the stage-1 directions
        sorted by smoothness under ``first``; ``smoothness`` holds the matching Rayleigh
        quotients (under ``second`` for the first ``keep`` entries, ``first`` for the rest).
    """
    basis = _check_basis(basis)
    k = basis.shape[1]
    if keep is None:
        keep = k // 2
    if isinstance(keep, bool) or not isinstance(keep, (int, np.integer)) or not 1 <= keep <= k:
        raise ValueError(f"keep must be an integer in [1, {k}] for a basis of {k} vectors; got {keep!r}")
    stage1, s1 = rayleigh_ritz_rotation(basis, first)
    stage2, s2 = rayleigh_ritz_rotation(stage1[:, :keep], second)
    return np.concatenate([stage2, stage1[:, keep:]], axis=1), np.concatenate([s2, s1[keep:]])


def knn_graph_laplacian(rows, n_neighbors: int, *, allowed=None) -> np.ndarray:
    """Unnormalised Laplacian of a k-nearest-neighbour graph learned from data rows.

    Each row (e.g. a row of an eNTK, one per input) is centred and normalised; two inputs are
    joined (weight 1) when either is among the other's ``n_neighbors`` most cosine-similar
    rows. This is the "learned graph" of seed 002 §5, footnote 7: neighbours are inputs whose
    kernel rows look alike, with no knowledge of the torus.

    Args:
        rows: ``(N, D)`` one feature row per input.
        n_neighbors: ``1 <= n_neighbors < N``.
        allowed: optional ``(N, N)`` boolean mask of the pairs that may be joined (e.g. only
            inputs that differ in one operand); each input picks its neighbours among the
            allowed ones (at least ``n_neighbors`` per row are needed).

    Returns:
        ``(N, N)`` Laplacian ``D - W`` of the symmetrised 0/1 adjacency ``W``.
    """
    rows = np.asarray(rows, dtype=np.float64)
    if rows.ndim != 2:
        raise ValueError(f"rows must be (N, D); got shape {rows.shape}")
    if not np.all(np.isfinite(rows)):
        raise ValueError("rows contain NaN or inf")
    n = rows.shape[0]
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, (int, np.integer)) or not 1 <= n_neighbors < n:
        raise ValueError(f"n_neighbors must be an integer in [1, {n - 1}] for {n} rows; got {n_neighbors!r}")
    centred = rows - rows.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("rows has a constant row; cosine similarity is undefined for it")
    unit = centred / norms
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    if allowed is not None:
        allowed = np.asarray(allowed)
        if allowed.shape != (n, n) or allowed.dtype != bool:
            raise ValueError(f"allowed must be a boolean ({n}, {n}) mask; got {allowed.dtype} of shape {allowed.shape}")
        few = (allowed & ~np.eye(n, dtype=bool)).sum(axis=1).min()
        if few < n_neighbors:
            raise ValueError(f"allowed leaves some input only {few} candidate neighbours; need n_neighbors = {n_neighbors}")
        sim = np.where(allowed, sim, -np.inf)
    # stable sort so that ties are broken by input index, reproducibly
    nbrs = np.argsort(-sim, axis=1, kind="stable")[:, :n_neighbors]
    W = np.zeros((n, n))
    W[np.repeat(np.arange(n), n_neighbors), nbrs.ravel()] = 1.0
    W = np.maximum(W, W.T)
    return np.diag(W.sum(axis=1)) - W
