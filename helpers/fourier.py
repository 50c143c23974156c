"""Fourier feature families on the p x p torus and the graph-smoothness rotation (seed 002 App. C, D).

The inputs of modular addition are the ``p**2`` pairs ``(a, b)``, stored in row-major order
``index = a * p + b`` (as in ``helpers.modular.make_data``). A function on the inputs is a
vector of length ``p**2``, i.e. a function on the torus ``Z_p x Z_p``. This module builds

* the graph Laplacians of the torus along a direction ``(da, db)`` (seed 002 eqs. 19-22):
  ``v^T L v = sum_{a,b} (v[a, b] - v[a + da, b + db])**2`` with indices mod p;
* the Fourier feature families ``(cos 2 pi k s / p, sin 2 pi k s / p)`` for ``s`` one of
  ``a``, ``b``, ``a + b``, ``a - b`` and ``k = 1 .. floor(p/2)`` (seed 002 eqs. 7-9);
* the squared overlap of a basis with those families (the heatmaps of seed 002 Figs 4-5), a
  scalar score (mean over basis vectors of the largest overlap), and the share of a subspace
  inside a family's span (which no rotation can change);
* the two-stage Laplacian rotation of a subspace (seed 002 App. C): diagonalise one Laplacian
  inside the subspace (Rayleigh-Ritz), keep its smoothest directions, and diagonalise a second
  Laplacian inside those;
* the *relabelled* torus, for the permutation control: the integers of ``a`` and of ``b`` are
  relabelled by random permutations, and Laplacians and families are those of the relabelled
  lattice. Whatever the rotation finds on the true torus and equally on a relabelled one is a
  property of the subspace's span, not of the cyclic order of ``Z_p``;
* learned priors (seed 002 §5, footnote 7): a k-nearest-neighbour graph on kernel rows, and the
  cycle of a translation of ``Z_p`` read off a subspace of "line" functions (the second cliff,
  which holds functions of ``a + b`` and ``a - b``) using only which operand each input has.

Every function takes any ``(p*p, k)`` basis, so the same tools serve any model trained on
pairs ``(a, b)`` mod p (the MLP of chapter 6, a transformer).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.sparse

from . import _checks

__all__ = [
    "DIRECTIONS",
    "cycle_laplacian",
    "torus_laplacian",
    "fourier_family",
    "random_relabelling",
    "relabel_index",
    "family_overlaps",
    "overlap_score",
    "span_share",
    "rayleigh_ritz_rotation",
    "two_stage_rotation",
    "torus_rotation",
    "permuted_torus_control",
    "knn_graph_laplacian",
    "graph_edge_shares",
    "line_graph",
    "learned_axis_laplacians",
]

# The four directions of the paper: a-axis (eq. 19), b-axis (eq. 20), sum diagonal (eq. 21),
# difference diagonal (eq. 22). A step (da, db) on the torus; the Fourier variable that is
# constant along the "other" family is the one this Laplacian cannot see.
DIRECTIONS = {"a": (1, 0), "b": (0, 1), "sum": (1, 1), "diff": (1, -1)}
_FAMILIES = ("a", "b", "sum", "diff")


# ----------------------------------------------------------------------------------------
# argument checks
# ----------------------------------------------------------------------------------------


def _check_p(p, name: str = "p") -> int:
    return _checks.integer(p, name, low=3)


def _check_relabel(relabel, p: int):
    """``None`` or a pair ``(perm_a, perm_b)`` of permutations of ``range(p)``."""
    if relabel is None:
        return None
    if not isinstance(relabel, (tuple, list)) or len(relabel) != 2:
        raise TypeError(f"relabel must be None or a pair (perm_a, perm_b) of permutations of range({p}); got {_checks.describe(relabel)}")
    perms = []
    for which, perm in zip(("perm_a", "perm_b"), relabel):
        perm = _checks.array(perm, f"relabel {which}", shape=(p,), kind="int")
        if not np.array_equal(np.sort(perm), np.arange(p)):
            raise ValueError(f"relabel {which} must be a permutation of range({p}); got {perm.tolist()}")
        perms.append(perm.astype(int))
    return tuple(perms)


def _check_basis(basis, name: str = "basis", *, rows: int | None = None) -> np.ndarray:
    basis = _checks.array(basis, name, ndim=2)
    basis = basis.astype(np.float64)
    if rows is not None and basis.shape[0] != rows:
        raise ValueError(f"{name} must have {rows} rows (one per input); got shape {basis.shape}")
    return basis


def _orthonormal(basis: np.ndarray, name: str = "basis") -> np.ndarray:
    """An orthonormal basis of the column span; refuses more columns than rows or a rank-deficient basis.

    A rank-deficient basis has no well-defined span of its column count: QR would return
    arbitrary directions for the missing ones, outside the span (hence the refusal).
    """
    n, k = basis.shape
    if k > n:
        raise ValueError(f"{name} must have at most as many columns as rows (k <= N); got shape {basis.shape}")
    q, r, _ = scipy.linalg.qr(basis, mode="economic", pivoting=True)
    diag = np.abs(np.diag(r))
    tol = max(n, k) * np.finfo(np.float64).eps * 1e3 * diag[0]
    rank = int(np.sum(diag > tol))
    if diag[0] == 0 or rank < k:
        raise ValueError(
            f"{name} must have full column rank (its {k} columns must span a {k}-dimensional subspace); "
            f"got numerical rank {rank if diag[0] else 0}"
        )
    return q


def _check_operator(L, n: int, name: str):
    """A symmetric ``(n, n)`` matrix, dense or scipy.sparse."""
    if scipy.sparse.issparse(L):
        if L.shape != (n, n):
            raise ValueError(f"{name} must be ({n}, {n}) to act on the basis vectors; got shape {L.shape}")
        L = scipy.sparse.csr_array(L, dtype=np.float64)
        if not np.all(np.isfinite(L.data)):
            raise ValueError(f"{name} must be finite; got NaN or inf entries")
        scale = np.abs(L.data).max() if L.nnz else 0.0
        asym = abs(L - L.T).max() if L.nnz else 0.0
        if asym > 1e-10 * max(scale, 1.0):
            raise ValueError(f"{name} must be symmetric; got max |L - L^T| = {asym:.3g}")
        return L
    L = _checks.symmetric(L, name)
    if L.shape != (n, n):
        raise ValueError(f"{name} must be ({n}, {n}) to act on the basis vectors; got shape {L.shape}")
    return L.astype(np.float64)


def _check_family(family, n: int, name: str = "family") -> np.ndarray:
    family = _checks.array(family, name, ndim=3)
    if family.shape[1] != 2 or family.shape[2] != n:
        raise ValueError(f"{name} must be (m, 2, N) with N = {n} rows of basis; got shape {family.shape}")
    return family.astype(np.float64)


# ----------------------------------------------------------------------------------------
# Laplacians and families
# ----------------------------------------------------------------------------------------


def cycle_laplacian(p: int) -> np.ndarray:
    """The unnormalised Laplacian ``L_1`` of the p-cycle: 2 on the diagonal, -1 on the
    (cyclic) off-diagonals (seed 002 App. C). Returns ``(p, p)``."""
    p = _check_p(p)
    eye = np.eye(p)
    shift = np.roll(eye, 1, axis=1)
    return 2 * eye - shift - shift.T


def random_relabelling(p: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two independent random permutations ``(perm_a, perm_b)`` of ``range(p)`` (``default_rng(seed)``)."""
    p = _check_p(p)
    seed = _checks.integer(seed, "seed", low=0)
    rng = np.random.default_rng(seed)
    return rng.permutation(p), rng.permutation(p)


def relabel_index(p: int, relabel=None) -> np.ndarray:
    """Where each input sits on the relabelled lattice: ``index[a*p + b] = perm_a[a]*p + perm_b[b]``.

    A lattice function ``g`` (length ``p**2``) read on the inputs is ``g[index]``; a lattice
    matrix ``L`` is ``L[index][:, index]``. ``relabel=None`` gives the identity.
    """
    p = _check_p(p)
    relabel = _check_relabel(relabel, p)
    a, b = np.divmod(np.arange(p * p), p)
    if relabel is None:
        return np.arange(p * p)
    perm_a, perm_b = relabel
    return perm_a[a] * p + perm_b[b]


def _step(direction, p: int) -> tuple[int, int]:
    if isinstance(direction, str):
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {sorted(DIRECTIONS)} or a step (da, db); got {direction!r}")
        return DIRECTIONS[direction]
    if isinstance(direction, (tuple, list)) and len(direction) == 2 and all(
        isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in direction
    ):
        da, db = int(direction[0]), int(direction[1])
        if da % p == 0 and db % p == 0:
            raise ValueError(f"direction {tuple(direction)!r} is the zero step mod {p}; the Laplacian would vanish")
        return da, db
    raise ValueError(f"direction must be one of {sorted(DIRECTIONS)} or a step (da, db) of two integers; got {direction!r}")


def torus_laplacian(p: int, direction, *, relabel=None, sparse: bool = False):
    """The Laplacian of the p x p torus along one direction (seed 002 eqs. 19-22).

    ``v^T L v = sum_{a,b} (v[a, b] - v[a + da, b + db])**2`` (indices mod p), so
    ``L = (I - S)^T (I - S)`` with ``S`` the shift by ``(da, db)``. For ``"a"`` this is
    ``L_1 (x) I_p`` and for ``"b"`` it is ``I_p (x) L_1`` (row-major index ``a * p + b``).

    Args:
        p: the modulus (>= 3).
        direction: ``"a"``, ``"b"``, ``"sum"``, ``"diff"`` or a step ``(da, db)``.
        relabel: ``None`` or ``(perm_a, perm_b)``: the Laplacian of the relabelled torus, on
            which input ``(a, b)`` sits at ``(perm_a[a], perm_b[b])`` (the permutation control).
        sparse: return a ``scipy.sparse`` CSR array (``5 p**2`` nonzeros) instead of a dense one.

    Returns:
        ``(p**2, p**2)`` symmetric positive semi-definite matrix.
    """
    p = _check_p(p)
    da, db = _step(direction, p)
    relabel = _check_relabel(relabel, p)
    sparse = _checks.boolean(sparse, "sparse")
    a, b = np.divmod(np.arange(p * p), p)
    neighbour = ((a + da) % p) * p + (b + db) % p
    n = p * p
    eye = scipy.sparse.identity(n, format="csr")
    shift = scipy.sparse.csr_array((np.ones(n), (np.arange(n), neighbour)), shape=(n, n))
    diff = eye - shift
    L = scipy.sparse.csr_array(diff.T @ diff)
    if relabel is not None:
        index = relabel_index(p, relabel)
        L = L[index][:, index]
    return scipy.sparse.csr_array(L) if sparse else L.toarray()


def _variable(p: int, family: str) -> np.ndarray:
    a, b = np.divmod(np.arange(p * p), p)
    table = {"a": a, "b": b, "sum": a + b, "diff": a - b}
    if family not in table:
        raise ValueError(f"family must be one of {sorted(table)}; got {family!r}")
    return table[family]


def fourier_family(p: int, family: str, *, relabel=None) -> np.ndarray:
    """Unit-norm Fourier features of one family on the torus (seed 002 eq. 9, App. D).

    Args:
        p: odd modulus.
        family: ``"a"``, ``"b"``, ``"sum"`` (``a + b``) or ``"diff"`` (``a - b``).
        relabel: ``None`` or ``(perm_a, perm_b)``: the family of the relabelled torus, e.g.
            ``cos(2 pi k perm_a[a] / p)`` (the permutation control).

    Returns:
        ``(floor(p/2), 2, p**2)``: entry ``[k-1, 0]`` is ``cos(2 pi k s / p)`` and ``[k-1, 1]`` is
        ``sin(2 pi k s / p)`` over the inputs (row-major ``a * p + b``), each normalised to unit
        length. For odd p the ``2 floor(p/2)`` vectors of a family are orthonormal.
    """
    p = _check_p(p)
    if p % 2 == 0:
        raise ValueError(f"p must be odd (the cos/sin pairs are orthonormal only then); got {p}")
    if not isinstance(family, str):
        raise TypeError(f"family must be one of {list(_FAMILIES)}; got {_checks.describe(family)}")
    s = _variable(p, family)
    relabel = _check_relabel(relabel, p)
    if relabel is not None:
        s = s[relabel_index(p, relabel)]
    k = np.arange(1, p // 2 + 1)[:, None]
    phase = 2 * np.pi * k * s[None, :] / p
    feats = np.stack([np.cos(phase), np.sin(phase)], axis=1)
    return feats / np.linalg.norm(feats, axis=-1, keepdims=True)


# ----------------------------------------------------------------------------------------
# overlaps and scores
# ----------------------------------------------------------------------------------------


def family_overlaps(basis, family) -> np.ndarray:
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
    family = _check_family(family, basis.shape[0])
    norms = np.linalg.norm(basis, axis=0)
    if np.any(norms == 0):
        raise ValueError(f"basis must not have a zero column; got zero columns at {np.flatnonzero(norms == 0).tolist()}")
    unit = basis / norms
    proj = np.einsum("mcn,nj->jmc", family, unit)
    return (proj**2).sum(axis=-1)


def overlap_score(overlaps) -> float:
    """Mean over basis vectors (rows) of the largest overlap with any family member.

    1 when every basis vector lies inside a single ``(cos k, sin k)`` pair; about
    ``1 / (number of pairs it is spread over)`` for a mixed basis.

    Args:
        overlaps: ``(k, m)`` squared overlaps in ``[0, 1]`` (from ``family_overlaps``).
    """
    overlaps = _checks.array(overlaps, "overlaps", ndim=2)
    if overlaps.min() < -1e-9 or overlaps.max() > 1 + 1e-9:
        raise ValueError(
            f"overlaps must lie in [0, 1] (squared overlaps of unit vectors); got values in "
            f"[{overlaps.min():.3g}, {overlaps.max():.3g}]"
        )
    return float(overlaps.max(axis=1).mean())


def span_share(basis, family) -> float:
    """Share of a subspace inside the span of a family: ``||F Q||_F**2 / k``.

    ``Q`` is an orthonormal basis of the column span of ``basis`` (``k`` columns) and ``F``
    the family's ``(cos, sin)`` vectors as orthonormal rows. 1 when the subspace lies inside
    the family's span, ``dim(span F) / N`` on average for a random subspace. It depends on
    the span only, so no rotation inside the subspace can change it.

    Args:
        basis: ``(N, k)`` of full column rank.
        family: ``(m, 2, N)`` with orthonormal vectors (``fourier_family``, or families of
            disjoint frequency content concatenated on the first axis).
    """
    basis = _check_basis(basis)
    family = _check_family(family, basis.shape[0])
    q = _orthonormal(basis)
    rows = family.reshape(-1, basis.shape[0])
    gram = rows @ rows.T
    if np.abs(gram - np.eye(rows.shape[0])).max() > 1e-8:
        raise ValueError("family must have orthonormal (cos, sin) vectors (as fourier_family returns them for odd p)")
    return float(np.sum((rows @ q) ** 2) / q.shape[1])


# ----------------------------------------------------------------------------------------
# the rotation (App. C)
# ----------------------------------------------------------------------------------------


def rayleigh_ritz_rotation(basis, laplacian) -> tuple[np.ndarray, np.ndarray]:
    """Rotate a subspace into the eigenbasis of a Laplacian compressed onto it.

    With ``c`` an orthonormal basis of the span of ``basis``, ``A = c^T L c = U diag(s) U^T``
    and the rotated basis is ``c U``, sorted from the smoothest (smallest ``s``) to the
    roughest (seed 002 App. C step 2).

    Args:
        basis: ``(N, k)``, ``k <= N``, of full column rank.
        laplacian: ``(N, N)`` symmetric, dense or ``scipy.sparse``.

    Returns:
        ``(rotated (N, k), smoothness (k,) ascending)``; the rotated columns are orthonormal
        and span the same subspace as ``basis``.
    """
    basis = _check_basis(basis)
    L = _check_operator(laplacian, basis.shape[0], "laplacian")
    c = _orthonormal(basis)
    A = c.T @ (L @ c)
    s, U = np.linalg.eigh((A + A.T) / 2)
    return c @ U, s


def two_stage_rotation(basis, first, second, *, keep: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The two-stage per-axis graph-smoothness rotation (seed 002 App. C; App. D for sum/diff).

    1. Diagonalise ``first`` inside the span of ``basis`` (``rayleigh_ritz_rotation``).
    2. Keep the ``keep`` smoothest directions (default: half of them, the family that ``first``
       cannot see; seed 002 footnote 11 passes half + 4) and diagonalise ``second`` inside
       their span.

    Args:
        basis: ``(N, k)`` spanning the subspace (an eNTK cliff), full column rank.
        first, second: ``(N, N)`` symmetric (e.g. the Laplacians ``L_a`` then ``L_b``).
        keep: number of directions passed to stage 2, ``1 <= keep <= k``.

    Returns:
        ``(rotated (N, k), smoothness (k,))``: the first ``keep`` columns are the stage-2
        directions sorted by smoothness under ``second``, the rest the stage-1 directions
        sorted by smoothness under ``first``; ``smoothness`` holds the matching Rayleigh
        quotients (under ``second`` for the first ``keep`` entries, ``first`` for the rest).
    """
    basis = _check_basis(basis)
    n, k = basis.shape
    first = _check_operator(first, n, "first")
    second = _check_operator(second, n, "second")
    keep = k // 2 if keep is None else _checks.integer(keep, "keep", low=1, high=k)
    if keep < 1:
        raise ValueError(f"keep must be an integer in [1, {k}] for a basis of {k} vectors; got {keep}")
    stage1, s1 = rayleigh_ritz_rotation(basis, first)
    stage2, s2 = rayleigh_ritz_rotation(stage1[:, :keep], second)
    return np.concatenate([stage2, stage1[:, keep:]], axis=1), np.concatenate([s2, s1[keep:]])


def _check_pair(pair) -> tuple[str, str]:
    if (
        not isinstance(pair, (tuple, list))
        or len(pair) != 2
        or not all(isinstance(f, str) and f in _FAMILIES for f in pair)
        or pair[0] == pair[1]
    ):
        raise ValueError(f"pair must be two different families of {list(_FAMILIES)}, e.g. ('a', 'b'); got {pair!r}")
    return tuple(pair)


def torus_rotation(basis, p: int, pair=("a", "b"), *, relabel=None, keep: int | None = None):
    """Rotate a subspace by the torus Laplacians of ``pair`` and score it against their families.

    ``two_stage_rotation`` with ``torus_laplacian(p, pair[0])`` then ``pair[1]``, and the
    overlaps of the result with the ``pair[0]`` and ``pair[1]`` families (concatenated in that
    order). With ``relabel`` both the Laplacians and the families are those of the relabelled
    torus (``permuted_torus_control``).

    Args:
        basis: ``(p*p, k)``, full column rank.
        p: odd modulus.
        pair: ``("a", "b")`` (the layer-1 cliff, App. C) or ``("sum", "diff")`` (App. D).
        relabel: ``None`` or ``(perm_a, perm_b)``.
        keep: directions passed to the second stage (default ``k // 2``).

    Returns:
        ``(rotated (p*p, k), overlaps (k, 2 floor(p/2)), score)``.
    """
    p = _check_p(p)
    if p % 2 == 0:
        raise ValueError(f"p must be odd (the Fourier families' cos/sin pairs are orthonormal only then); got {p}")
    basis = _check_basis(basis, rows=p * p)
    pair = _check_pair(pair)
    relabel = _check_relabel(relabel, p)
    first, second = (torus_laplacian(p, d, relabel=relabel, sparse=True) for d in pair)
    rotated, _ = two_stage_rotation(basis, first, second, keep=keep)
    family = np.concatenate([fourier_family(p, f, relabel=relabel) for f in pair])
    overlaps = family_overlaps(rotated, family)
    return rotated, overlaps, overlap_score(overlaps)


def permuted_torus_control(basis, p: int, pair=("a", "b"), *, n_perms: int = 5, seed: int = 0, keep: int | None = None) -> np.ndarray:
    """Scores of the torus rotation on randomly relabelled tori (the null for ``torus_rotation``).

    For each of ``n_perms`` relabellings ``random_relabelling(p, seed=seed + i)``, the score of
    ``torus_rotation(basis, p, pair, relabel=...)``: the rotation and the families of a torus on
    which the integers of ``a`` and ``b`` are shuffled. A score as high as the true torus's
    means the score is fixed by the span of ``basis`` (e.g. "all functions of one operand"),
    not by the cyclic order of ``Z_p``.

    Returns:
        ``(n_perms,)`` scores.
    """
    p = _check_p(p)
    n_perms = _checks.integer(n_perms, "n_perms", low=1)
    seed = _checks.integer(seed, "seed", low=0)
    basis = _check_basis(basis, rows=p * p)
    return np.array([
        torus_rotation(basis, p, pair, relabel=random_relabelling(p, seed=seed + i), keep=keep)[2]
        for i in range(n_perms)
    ])


# ----------------------------------------------------------------------------------------
# learned priors (seed 002 §5, footnote 7)
# ----------------------------------------------------------------------------------------


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
    rows = _checks.array(rows, "rows", ndim=2).astype(np.float64)
    n = rows.shape[0]
    n_neighbors = _checks.integer(n_neighbors, "n_neighbors", low=1, high=n - 1)
    centred = rows - rows.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError(f"rows must not contain a constant row (cosine similarity is undefined for it); got constant rows {np.flatnonzero(norms[:, 0] == 0).tolist()[:5]}")
    unit = centred / norms
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    if allowed is not None:
        allowed = _checks.array(allowed, "allowed", shape=(n, n), kind="bool")
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


def graph_edge_shares(laplacian, p: int, *, n_perms: int = 0, seed: int = 0) -> dict:
    """What the edges of a graph on the ``p**2`` inputs join, against chance.

    Edges are the nonzero off-diagonal entries of ``laplacian``. Returns a dict:

    * ``"edges"``: the number of (undirected) edges;
    * ``"common_operand"``: share of edges joining inputs that share ``a`` or ``b``;
    * ``"torus_step"``: share of the common-operand edges that are torus steps (the other
      operand differs by +-1);
    * ``"chance"``: ``4 / (2 (p - 1))``, that share for common-operand edges drawn at random
      (each input has ``2 (p - 1)`` partners sharing an operand, 4 of them torus steps);
    * with ``n_perms > 0``, ``"null_mean"`` and ``"null_sd"``: the torus-step share of the
      same graph after relabelling the integers of ``a`` and ``b`` by ``n_perms`` random
      permutations (``random_relabelling(p, seed=seed + i)``). This null keeps the graph's
      own structure (degrees, clustering, correlated edges), so its spread is the right
      yardstick; a binomial one would be too narrow.
    """
    p = _check_p(p)
    L = _checks.symmetric(laplacian, "laplacian")
    if L.shape != (p * p, p * p):
        raise ValueError(f"laplacian must be (p*p, p*p) = ({p * p}, {p * p}); got shape {L.shape}")
    n_perms = _checks.integer(n_perms, "n_perms", low=0)
    seed = _checks.integer(seed, "seed", low=0)
    i, j = np.nonzero(np.triu(L != 0, k=1))
    if i.size == 0:
        raise ValueError("laplacian must have at least one edge (a nonzero off-diagonal entry); got none")
    (ai, bi), (aj, bj) = np.divmod(i, p), np.divmod(j, p)

    def shares(pa, pb):
        a1, a2, b1, b2 = pa[ai], pa[aj], pb[bi], pb[bj]
        common = (a1 == a2) | (b1 == b2)
        step = ((a1 == a2) & np.isin((b1 - b2) % p, [1, p - 1])) | ((b1 == b2) & np.isin((a1 - a2) % p, [1, p - 1]))
        return float(common.mean()), (float(step[common].mean()) if common.any() else float("nan"))

    identity = np.arange(p)
    common_share, step_share = shares(identity, identity)
    out = {"edges": int(i.size), "common_operand": common_share, "torus_step": step_share, "chance": 4.0 / (2 * (p - 1))}
    if n_perms:
        null = np.array([shares(*random_relabelling(p, seed=seed + k))[1] for k in range(n_perms)])
        out["null_mean"], out["null_sd"] = float(np.mean(null)), float(np.std(null, ddof=1)) if n_perms > 1 else 0.0
    return out


def _check_anchors(anchors, p: int, name: str) -> tuple[int, int]:
    if not isinstance(anchors, (tuple, list)) or len(anchors) != 2:
        raise TypeError(f"{name} must be a pair of labels (u, w); got {_checks.describe(anchors)}")
    u, w = (_checks.integer(x, f"{name} entries", low=0, high=p - 1) for x in anchors)
    if u == w:
        raise ValueError(f"{name} must be two different labels; got ({u}, {w})")
    return u, w


def line_graph(basis, p: int, *, axis: str = "a", anchors=(0, 1), n_neighbors: int = 2) -> np.ndarray:
    """A graph on the labels of one operand, read off a subspace of line functions.

    Take the projector ``P`` onto the span of ``basis`` and two labels ``(u, w)`` of the
    *other* operand. For ``axis="a"``, ``S[a', a] = P[(a', u), (a, w)]`` (symmetrised): how
    strongly the subspace ties input ``(a', u)`` to input ``(a, w)``. Each label is joined to
    its ``n_neighbors`` largest partners. If the subspace holds the functions of ``a + b`` and
    of ``a - b`` (the second cliff, seed 002 App. D), ``(a', u)`` shares a line with ``(a, w)``
    exactly when ``a' = a +- (w - u)``, so with ``n_neighbors = 2`` the graph is the cycle of
    the translation by ``w - u``: a p-cycle for prime p, whose Laplacian's eigenspaces are
    the ``(cos k, sin k)`` pairs of ``a``. Nothing here uses the order of the integers: the
    anchors are two arbitrary labels, and only which operand each input has enters.

    Args:
        basis: ``(p*p, k)`` spanning the subspace, full column rank.
        axis: ``"a"`` (a graph on the labels of ``a``) or ``"b"``.
        anchors: two different labels of the other operand.
        n_neighbors: ``1 <= n_neighbors < p``.

    Returns:
        ``(p, p)`` symmetric 0/1 adjacency.
    """
    p = _check_p(p)
    basis = _check_basis(basis, rows=p * p)
    axis = _checks.choice(axis, "axis", ("a", "b"))
    u, w = _check_anchors(anchors, p, "anchors")
    n_neighbors = _checks.integer(n_neighbors, "n_neighbors", low=1, high=p - 1)
    q = _orthonormal(basis).reshape(p, p, -1)  # [a, b, :]
    rows_u, rows_w = (q[:, u], q[:, w]) if axis == "a" else (q[u], q[w])
    S = rows_u @ rows_w.T
    S = (S + S.T) / 2
    np.fill_diagonal(S, -np.inf)
    nbrs = np.argsort(-S, axis=1, kind="stable")[:, :n_neighbors]
    W = np.zeros((p, p))
    W[np.repeat(np.arange(p), n_neighbors), nbrs.ravel()] = 1.0
    return np.maximum(W, W.T)


def learned_axis_laplacians(basis, p: int, *, anchors_a=(0, 1), anchors_b=(0, 1), n_neighbors: int = 2, sparse: bool = False):
    """Per-axis Laplacians learned from a subspace of line functions, in place of ``L_a``, ``L_b``.

    ``G_a = line_graph(basis, p, axis="a", anchors=anchors_a)`` and likewise ``G_b``; the
    returned operators are ``lap(G_a) (x) I_p`` and ``I_p (x) lap(G_b)`` with ``lap(G) = D - G``,
    i.e. the torus Laplacians of seed 002 eqs. (19)-(20) with the steps ``+-1`` replaced by the
    learned translations. Use them with ``two_stage_rotation``.

    Returns:
        ``(L_a, L_b)``, each ``(p**2, p**2)`` (``scipy.sparse`` CSR if ``sparse``).
    """
    p = _check_p(p)
    sparse = _checks.boolean(sparse, "sparse")
    _check_anchors(anchors_a, p, "anchors_a")
    _check_anchors(anchors_b, p, "anchors_b")
    graphs = [line_graph(basis, p, axis=ax, anchors=anc, n_neighbors=n_neighbors) for ax, anc in (("a", anchors_a), ("b", anchors_b))]
    laps = [scipy.sparse.csr_array(np.diag(g.sum(axis=1)) - g) for g in graphs]
    eye = scipy.sparse.identity(p, format="csr")
    L_a = scipy.sparse.csr_array(scipy.sparse.kron(laps[0], eye))
    L_b = scipy.sparse.csr_array(scipy.sparse.kron(eye, laps[1]))
    return (L_a, L_b) if sparse else (L_a.toarray(), L_b.toarray())
