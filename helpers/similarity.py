"""Comparing data-space kernels: CKA, CCA, their chance levels, effective rank, clustering.

The layerwise eNTK gives, per layer, kernels on the data (the representation Gram and the
sensitivity kernel, seed 001 §4). This module compares such kernels:

* ``cka``: centred kernel alignment (Cortes et al. 2012; Kornblith et al. 2019),
  ``CKA(K, L) = <HKH, HLH>_F / (||HKH||_F ||HLH||_F)``, ``H = I - 11^T/N``;
* ``cca`` / ``mean_cca``: canonical correlations between two feature sets (SVCCA, Raghu et al.
  2017, when the features are first truncated to their leading singular directions);
  ``kernel_features`` and ``leading_subspace`` turn a kernel into features ``U sqrt(Lambda)``
  or an orthonormal basis ``U`` so that CCA can sit beside CKA. ``mean_cca(..., dim=d)``
  compares the two kernels' leading subspaces at the same dimension ``d``: the mean canonical
  correlation of a ``d``-dimensional subspace with a ``D``-dimensional one grows with ``D``,
  so comparisons at unequal dimension are biased towards the larger one;
* ``permutation_null``: the chance level of either measure for two kernels with the given
  spectra, from relabelling the inputs of one of them; ``compare_pairs`` computes both
  measures and their nulls for many pairs of kernels, decomposing each kernel once;
* ``context_overlap``: principal-angle cosines between the top eigen-directions of a kernel
  restricted to a subset of inputs and those of the whole kernel (seed 001 §8);
* ``effective_rank``: the entropy effective rank ``exp(-sum p log p)``, ``p = lambda/sum lambda``
  (Roy & Vetterli 2007), or the participation ratio ``(sum lambda)^2 / sum lambda^2``;
* ``diffusion_map`` / ``cluster``: spectral embedding of the kernel-induced distance
  (Coifman & Lafon 2006; von Luxburg 2007) and k-means on it; ``adjusted_rand_index`` compares
  two clusterings.

Every function checks its arguments (``helpers._checks``) and raises ``TypeError`` or
``ValueError`` naming the argument; none returns NaN.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
from scipy.cluster.vq import kmeans2

from . import _checks

__all__ = [
    "centre",
    "cka",
    "feature_cka",
    "kernel_features",
    "leading_subspace",
    "cca",
    "mean_cca",
    "permutation_null",
    "compare_pairs",
    "context_overlap",
    "context_overlaps",
    "effective_rank",
    "diffusion_map",
    "cluster",
    "adjusted_rand_index",
]


def _kernel(K, name: str) -> tuple[np.ndarray, float]:
    """A finite, symmetric ``(N, N)`` kernel with ``N >= 2`` as float64, and its round-off scale.

    The scale is 1e3 units of round-off of the input's dtype (as in ``_checks.symmetric``):
    relative to the largest eigenvalue, eigenvalues below it count as zero and eigenvalue gaps
    below it as degeneracies; a centred kernel smaller than it (relative to the kernel) counts
    as constant. A kernel computed in float32 carries errors of about 1e-7 of its scale.
    """
    K = _checks.symmetric(K, name, min_len=2)
    eps = np.finfo(K.dtype).eps if K.dtype.kind == "f" else np.finfo(np.float64).eps
    return np.asarray(K, dtype=np.float64), 1e3 * float(eps)


def _pair(K, L, names=("K", "L")):
    (K, tol_k), (L, tol_l) = _kernel(K, names[0]), _kernel(L, names[1])
    if K.shape != L.shape:
        raise ValueError(
            f"{names[1]} must be a kernel on the same inputs as {names[0]}, shape {K.shape}; got shape {L.shape}"
        )
    return K, L, tol_k, tol_l


def _centred(K: np.ndarray) -> np.ndarray:
    return K - K.mean(axis=0, keepdims=True) - K.mean(axis=1, keepdims=True) + K.mean()


def centre(K) -> np.ndarray:
    """``H K H`` with ``H = I - 11^T/N``: ``(N, N) -> (N, N)`` (removes the mean feature)."""
    K = _checks.square(K, "K")
    return _centred(np.asarray(K, dtype=np.float64))


def _cka_centred(Kc: np.ndarray, Lc: np.ndarray, scale: tuple, tols: tuple, names=("K", "L")) -> float:
    """CKA of two centred kernels; ``scale`` are the norms of the uncentred ones."""
    norms = np.linalg.norm(Kc), np.linalg.norm(Lc)
    for norm, s, tol, name in zip(norms, scale, tols, names):
        if not norm > tol * s:
            raise ValueError(
                f"{name} must vary over the inputs (CKA needs a nonzero centred kernel); got a constant kernel "
                f"(centred norm {norm:.3g} against norm {s:.3g}, round-off level)"
            )
    return float(np.sum(Kc * Lc) / (norms[0] * norms[1]))


def cka(K, L) -> float:
    """Linear CKA between two kernels on the same N inputs: ``(N, N), (N, N) -> [0, 1]``.

    ``<HKH, HLH>_F / (||HKH||_F ||HLH||_F)`` (Kornblith et al. 2019, linear CKA written with
    Gram matrices). Invariant to an isotropic scaling of either kernel and to orthogonal
    transformations of the features behind it. Raises ``ValueError`` when a kernel is constant
    (its centred version is zero to round-off).
    """
    K, L, tol_k, tol_l = _pair(K, L)
    return _cka_centred(_centred(K), _centred(L), (np.linalg.norm(K), np.linalg.norm(L)), (tol_k, tol_l))


def _feature_pair(X, Y):
    X = _checks.array(X, "X", ndim=(1, 2), min_len=2)
    Y = _checks.array(Y, "Y", ndim=(1, 2), min_len=2)
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"Y must have as many rows (inputs) as X, {X.shape[0]}; got {Y.shape[0]}")
    tols = [1e3 * float(np.finfo(Z.dtype if Z.dtype.kind == "f" else np.float64).eps) for Z in (X, Y)]
    X = np.asarray(X, dtype=np.float64).reshape(X.shape[0], -1)
    Y = np.asarray(Y, dtype=np.float64).reshape(Y.shape[0], -1)
    return X, Y, tols


def feature_cka(X, Y) -> float:
    """Linear CKA between feature matrices ``X (N, p)`` and ``Y (N, q)``: ``cka(X X^T, Y Y^T)``.

    A 1-d ``X (N,)`` is one feature.
    """
    X, Y, tols = _feature_pair(X, Y)
    K, L = X @ X.T, Y @ Y.T
    return _cka_centred(_centred(K), _centred(L), (np.linalg.norm(K), np.linalg.norm(L)), tuple(tols), ("X", "Y"))


def _eigen_centred(K: np.ndarray, top: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Eigenpairs of the centred kernel, descending; only the ``top`` leading ones if given."""
    Kc = _centred(K)
    Kc = (Kc + Kc.T) / 2
    n = Kc.shape[0]
    if top is None or top >= n:
        lam, U = scipy.linalg.eigh(Kc, driver="evd")  # divide and conquer: fast for all pairs
    else:
        lam, U = scipy.linalg.eigh(Kc, subset_by_index=[n - top, n - 1], driver="evr")
    return lam[::-1], U[:, ::-1]


def _positive_rank(lam: np.ndarray, tol: float) -> int:
    """Number of eigenvalues above ``tol`` times the largest (0 if none is positive)."""
    if lam.size == 0 or not lam[0] > 0:
        return 0
    return int(np.count_nonzero(lam > tol * lam[0]))


def _leading_by_energy(K: np.ndarray, tol: float, energy: float, max_rank: int | None, name: str):
    lam, U = _eigen_centred(K)
    lam = np.clip(lam, 0.0, None)
    rank = _positive_rank(lam, tol)
    if rank == 0:
        raise ValueError(f"{name} must vary over the inputs (its centred kernel is zero, it has no features)")
    r = int(np.searchsorted(np.cumsum(lam) / lam.sum(), energy - 1e-12) + 1)
    r = min(r, rank)
    if max_rank is not None:
        r = min(r, max_rank)
    return lam[:r], U[:, :r]


def _leading_by_dim(K: np.ndarray, tol: float, dim: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    n = K.shape[0]
    if dim > n - 1:
        raise ValueError(f"dim must be <= N - 1 = {n - 1} (a centred kernel on N inputs has rank <= N - 1); got {dim}")
    lam, U = _eigen_centred(K, top=dim + 1)
    rank = _positive_rank(lam, tol)
    if rank < dim:
        raise ValueError(
            f"dim must be <= the number of positive eigenvalues of the centred {name}; got dim = {dim} but "
            f"{name} has {rank} (its leading subspace of dimension {dim} is not defined)"
        )
    if lam[dim - 1] - lam[dim] <= tol * lam[0]:
        raise ValueError(
            f"dim = {dim} cuts through a degenerate eigenvalue of {name} (eigenvalues {dim} and {dim + 1} of its "
            f"centred kernel are {lam[dim - 1]:.6g} and {lam[dim]:.6g}): its leading {dim}-dimensional subspace "
            f"is not determined by the kernel; choose another dim"
        )
    return lam[:dim], U[:, :dim]


def _energy_and_rank(energy, max_rank):
    energy = _checks.real(energy, "energy", low=0.0, high=1.0, low_open=True)
    if max_rank is not None:
        max_rank = _checks.integer(max_rank, "max_rank", low=1)
    return energy, max_rank


def kernel_features(K, *, energy: float = 0.99, max_rank: int | None = None) -> np.ndarray:
    """Features ``Phi = U_r sqrt(Lambda_r)`` with ``Phi Phi^T ~ H K H``: ``(N, N) -> (N, r)``.

    Keeps the leading eigen-directions of the centred kernel that hold a fraction ``energy`` of
    its trace (the "SV" step of SVCCA), at most ``max_rank`` of them.
    """
    K, tol = _kernel(K, "K")
    energy, max_rank = _energy_and_rank(energy, max_rank)
    lam, U = _leading_by_energy(K, tol, energy, max_rank, "K")
    return U * np.sqrt(lam)


def leading_subspace(K, dim: int) -> np.ndarray:
    """Orthonormal basis ``(N, dim)`` of the top-``dim`` eigenvectors of the centred kernel.

    Raises ``ValueError`` when the centred kernel has fewer than ``dim`` positive eigenvalues,
    or when its eigenvalues ``dim`` and ``dim + 1`` are equal to round-off of the input's dtype
    (then no unique leading subspace exists).
    """
    K, tol = _kernel(K, "K")
    dim = _checks.integer(dim, "dim", low=1)
    return _leading_by_dim(K, tol, dim, "K")[1]


def cca(X, Y, *, rel_tol: float = 1e-10) -> np.ndarray:
    """Canonical correlations between ``X (N, p)`` and ``Y (N, q)``, descending.

    Both are centred; each is replaced by an orthonormal basis of its column space (directions
    with singular value below ``rel_tol`` times the largest are dropped), and the canonical
    correlations are the singular values of ``Q_X^T Q_Y`` (Björck & Golub 1973). Returns
    ``min(rank X, rank Y)`` values in ``[0, 1]``.
    """
    X, Y, tols = _feature_pair(X, Y)
    rel_tol = _checks.real(rel_tol, "rel_tol", low=0.0, high=1.0, low_open=True, high_open=True)

    def basis(Z, name, tol):
        scale = np.abs(Z).max()
        Z = Z - Z.mean(axis=0)
        U, s, _ = np.linalg.svd(Z, full_matrices=False)
        if not s[0] > tol * scale * np.sqrt(Z.shape[0]):
            raise ValueError(f"{name} must vary over the inputs (CCA needs a non-constant feature); got constant features")
        return U[:, s > rel_tol * s[0]]

    rho = np.linalg.svd(basis(X, "X", tols[0]).T @ basis(Y, "Y", tols[1]), compute_uv=False)
    return np.clip(rho, 0.0, 1.0)


def _subspace_cca(U: np.ndarray, V: np.ndarray) -> float:
    return float(np.mean(np.clip(np.linalg.svd(U.T @ V, compute_uv=False), 0.0, 1.0)))


def mean_cca(K, L, *, energy: float = 0.99, max_rank: int | None = None, dim: int | None = None) -> float:
    """Mean canonical correlation between two kernels' leading features (SVCCA on kernels).

    With ``dim=None``: each kernel keeps the leading directions of its centred version holding
    a fraction ``energy`` of its trace (at most ``max_rank``); the two dimensions then differ,
    and the result is ``mean(cca(kernel_features(K), kernel_features(L)))``. With ``dim=d``:
    both keep exactly their top ``d`` directions (``leading_subspace``), the comparison at equal
    dimension; ``energy`` and ``max_rank`` are then unused. Computed from the eigenvectors
    directly (they are already an orthonormal, centred basis of the features).
    """
    K, L, tol_k, tol_l = _pair(K, L)
    if dim is not None:
        dim = _checks.integer(dim, "dim", low=1)
        return _subspace_cca(_leading_by_dim(K, tol_k, dim, "K")[1], _leading_by_dim(L, tol_l, dim, "L")[1])
    energy, max_rank = _energy_and_rank(energy, max_rank)
    _, U = _leading_by_energy(K, tol_k, energy, max_rank, "K")
    _, V = _leading_by_energy(L, tol_l, energy, max_rank, "L")
    return _subspace_cca(U, V)


def permutation_null(
    K, L, *, measure: str = "cka", dim: int | None = None, permutations: int = 100, seed: int = 0
) -> np.ndarray:
    """Chance level of ``cka`` or ``mean_cca(dim=...)`` for kernels with these spectra: ``(permutations,)``.

    Each value compares ``K`` with ``P L P^T`` for a random permutation ``P`` of the inputs:
    the relabelled kernel has exactly the spectrum (and the entries) of ``L`` but no relation to
    which input is which in ``K``. A similarity that does not exceed this distribution says
    nothing beyond the two spectra.

    Args:
        K: ``(N, N)`` kernel.
        L: ``(N, N)`` kernel on the same inputs (the one relabelled).
        measure: ``"cka"`` or ``"cca"`` (``mean_cca`` at equal dimension ``dim``, required).
        permutations: number of random relabellings, at least 1.
        seed: seeds the permutations (``numpy.random.default_rng``).
    """
    K, L, tol_k, tol_l = _pair(K, L)
    measure = _checks.choice(measure, "measure", ("cka", "cca"))
    permutations = _checks.integer(permutations, "permutations", low=1)
    seed = _checks.integer(seed, "seed", low=0)
    rng = np.random.default_rng(seed)
    n = K.shape[0]
    out = np.empty(permutations)
    if measure == "cka":
        if dim is not None:
            raise ValueError(f"dim must be None for measure='cka' (CKA uses the whole kernel); got {dim!r}")
        Kc, Lc = _centred(K), _centred(L)
        scale, tols = (np.linalg.norm(K), np.linalg.norm(L)), (tol_k, tol_l)
        for i in range(permutations):
            perm = rng.permutation(n)
            out[i] = _cka_centred(Kc, Lc[np.ix_(perm, perm)], scale, tols)  # H commutes with P
        return out
    if dim is None:
        raise ValueError("dim must be given for measure='cca' (the null compares subspaces of equal dimension); got None")
    dim = _checks.integer(dim, "dim", low=1)
    U = _leading_by_dim(K, tol_k, dim, "K")[1]
    V = _leading_by_dim(L, tol_l, dim, "L")[1]
    for i in range(permutations):
        out[i] = _subspace_cca(U, V[rng.permutation(n)])  # the eigenvectors of P L P^T are P V
    return out


def _dims(dim, n: int):
    """``dim`` as a tuple of ints in [1, n - 1], and whether it was a single int."""
    if isinstance(dim, (list, tuple, np.ndarray)):
        if len(dim) == 0:
            raise ValueError("dim must be an integer or a non-empty sequence of integers; got an empty sequence")
        dims = tuple(_checks.integer(d, "dim", low=1, high=n - 1) for d in dim)
        return dims, False
    return (_checks.integer(dim, "dim", low=1, high=n - 1),), True


def compare_pairs(
    kernels: dict,
    pairs,
    *,
    dim=None,
    energy: float | None = None,
    permutations: int = 0,
    seed: int = 0,
) -> dict:
    """CKA, CCA and their permutation nulls for many pairs of kernels, each kernel decomposed once.

    The same numbers as ``cka``, ``mean_cca`` and ``permutation_null`` called pair by pair,
    without repeating the centring and eigen-decomposition of a kernel that enters several
    pairs (seed 001 §4 tracks every pair of layer kernels over training).

    Args:
        kernels: dict name -> ``(N, N)`` kernel, all on the same ``N`` inputs.
        pairs: sequence of ``(name, name)``; ``P`` pairs.
        dim: ``None``, an integer, or a sequence of ``D`` integers: the common dimension(s) of
            equal-dimension CCA (``mean_cca(K, L, dim=d)``; each kernel's leading subspace must be
            determined, as in ``leading_subspace``).
        energy: ``None`` or the trace fraction of the energy rule (``mean_cca(K, L, energy=...)``).
        permutations: relabellings per pair for the nulls (0: none). Pair ``j`` uses the
            permutations of ``permutation_null(K, L, seed=seed + j)``.
        seed: non-negative integer.

    Returns:
        dict with ``"cka"`` ``(P,)``; with ``dim``: ``"cca"`` ``(P,)`` for an integer or
        ``(P, D)`` for a sequence; with ``energy``: ``"cca_energy"`` ``(P,)`` and ``"kept"``
        ``(P, 2)`` (directions kept for each kernel of the pair); with ``permutations``:
        ``"cka_null"`` ``(P, permutations)`` and, with ``dim``, ``"cca_null"`` shaped like
        ``"cca"`` plus a trailing ``permutations`` axis.
    """
    if not isinstance(kernels, dict) or not kernels:
        raise TypeError(f"kernels must be a non-empty dict name -> (N, N) kernel; got {_checks.describe(kernels)}")
    checked = {}
    for name, K in kernels.items():
        checked[name] = _kernel(K, f"kernels[{name!r}]")
    shapes = {K.shape for K, _ in checked.values()}
    if len(shapes) != 1:
        raise ValueError(f"kernels must all be on the same inputs (one shape); got shapes {sorted(shapes)}")
    n = next(iter(shapes))[0]
    if isinstance(pairs, (str, bytes)) or not hasattr(pairs, "__iter__"):
        raise TypeError(f"pairs must be a sequence of (name, name) tuples; got {_checks.describe(pairs)}")
    pairs = list(pairs)
    if not pairs:
        raise ValueError("pairs must hold at least one (name, name) pair; got none")
    for pair in pairs:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise TypeError(f"pairs must hold (name, name) tuples; got {pair!r}")
        for name in pair:
            if name not in checked:
                raise ValueError(f"pairs must name kernels in kernels {sorted(map(str, checked))}; got {name!r}")
    dims, single = (None, True) if dim is None else _dims(dim, n)
    if energy is not None:
        energy, _ = _energy_and_rank(energy, None)
    permutations = _checks.integer(permutations, "permutations", low=0)
    seed = _checks.integer(seed, "seed", low=0)

    used = {name for pair in pairs for name in pair}
    centred, norms, bases, energy_bases = {}, {}, {}, {}
    for name in used:
        K, tol = checked[name]
        centred[name], norms[name] = _centred(K), np.linalg.norm(K)
        label = f"kernels[{name!r}]"
        if dims is not None or energy is not None:
            # the energy rule needs the whole spectrum; equal dimensions only the top of it
            lam, U = _eigen_centred(K, top=None if energy is not None else max(dims) + 1)
            if dims is not None:
                top = max(dims)
                # the checks of _leading_by_dim at every requested dimension, on one decomposition
                rank = _positive_rank(lam, tol)
                for d in dims:
                    if rank < d:
                        raise ValueError(
                            f"dim must be <= the number of positive eigenvalues of the centred {label}; got dim = {d} "
                            f"but {label} has {rank}"
                        )
                    if lam[d - 1] - lam[d] <= tol * lam[0]:
                        raise ValueError(
                            f"dim = {d} cuts through a degenerate eigenvalue of {label} ({lam[d - 1]:.6g} and "
                            f"{lam[d]:.6g}): its leading {d}-dimensional subspace is not determined; choose another dim"
                        )
                bases[name] = U[:, :top]
            if energy is not None:
                lam_pos = np.clip(lam, 0.0, None)
                rank = _positive_rank(lam_pos, tol)
                if rank == 0:
                    raise ValueError(f"{label} must vary over the inputs (its centred kernel is zero)")
                r = min(int(np.searchsorted(np.cumsum(lam_pos) / lam_pos.sum(), energy - 1e-12) + 1), rank)
                energy_bases[name] = U[:, :r]

    def cca_dims(U, V):
        return np.array([_subspace_cca(U[:, :d], V[:, :d]) for d in dims])

    out = {"cka": np.empty(len(pairs))}
    if dims is not None:
        out["cca"] = np.empty((len(pairs), len(dims)))
    if energy is not None:
        out["cca_energy"], out["kept"] = np.empty(len(pairs)), np.empty((len(pairs), 2), dtype=int)
    if permutations:
        out["cka_null"] = np.empty((len(pairs), permutations))
        if dims is not None:
            out["cca_null"] = np.empty((len(pairs), len(dims), permutations))
    for j, (a, b) in enumerate(pairs):
        scale, tols = (norms[a], norms[b]), (checked[a][1], checked[b][1])
        names = (f"kernels[{a!r}]", f"kernels[{b!r}]")
        out["cka"][j] = _cka_centred(centred[a], centred[b], scale, tols, names)
        if dims is not None:
            out["cca"][j] = cca_dims(bases[a], bases[b])
        if energy is not None:
            out["cca_energy"][j] = _subspace_cca(energy_bases[a], energy_bases[b])
            out["kept"][j] = energy_bases[a].shape[1], energy_bases[b].shape[1]
        if permutations:
            rng = np.random.default_rng(seed + j)
            for i in range(permutations):
                perm = rng.permutation(n)
                out["cka_null"][j, i] = _cka_centred(centred[a], centred[b][np.ix_(perm, perm)], scale, tols, names)
            if dims is not None:
                rng = np.random.default_rng(seed + j)
                for i in range(permutations):
                    out["cca_null"][j, :, i] = cca_dims(bases[a], bases[b][rng.permutation(n)])
    if single and dims is not None:
        out["cca"] = out["cca"][:, 0]
        if "cca_null" in out:
            out["cca_null"] = out["cca_null"][:, 0]
    return out


def _subset(subset, n: int, name: str) -> np.ndarray:
    subset = _checks.array(subset, name, ndim=1, kind="int")
    if subset.min() < 0 or subset.max() >= n:
        raise ValueError(f"{name} must hold indices in [0, {n}); got values from {subset.min()} to {subset.max()}")
    if np.unique(subset).size != subset.size:
        raise ValueError(f"{name} must hold distinct indices; got {subset.size - np.unique(subset).size} repeated")
    return subset


def _top_positive(K: np.ndarray, tol: float, k: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    lam, V = np.linalg.eigh(K)
    lam, V = lam[::-1][:k], V[:, ::-1][:, :k]
    if _positive_rank(lam, tol) < k:
        raise ValueError(
            f"k must be <= the number of positive eigenvalues of {where}; got k = {k} "
            f"(eigenvalue {k} is {lam[-1]:.3g}, the largest {lam[0]:.3g})"
        )
    return lam, V


def _overlap(K, tol, subset, k, lam, V, where):
    lam_s, U = _top_positive(K[np.ix_(subset, subset)], tol, k, where)
    O = (U / np.sqrt(lam_s)).T @ K[subset] @ (V / np.sqrt(lam))
    return np.clip(np.linalg.svd(O, compute_uv=False), 0.0, 1.0)


def context_overlap(K, subset, k: int) -> np.ndarray:
    """Cosines of the principal angles between the top-``k`` directions of a context kernel and of ``K``.

    In parameter space a kernel is the Gram matrix ``K = Phi Phi^T`` of features ``phi(x)``;
    the top eigen-directions of ``sum_{x in S} phi(x) phi(x)^T`` (the context ``S``, seed 001
    §8) are ``Phi_S^T u / sqrt(lambda)`` for the eigenpairs ``(lambda, u)`` of ``K[S, S]``, and
    those of the whole data are ``Phi^T v / sqrt(mu)``. Their inner products need only kernel
    blocks, ``O = Lambda_S^{-1/2} U_S^T K[S, :] V Mu^{-1/2}``, and the singular values of ``O``
    are the cosines of the principal angles between the two ``k``-dimensional subspaces.

    Args:
        K: ``(N, N)`` positive semi-definite kernel (uncentred: the directions are those of the
            second-moment operator).
        subset: ``(M,)`` distinct integer indices of the context's inputs, ``M >= k``.
        k: number of directions compared.

    Returns:
        ``(k,)`` cosines in ``[0, 1]``, descending.
    """
    K, tol = _kernel(K, "K")
    subset = _subset(subset, K.shape[0], "subset")
    k = _checks.integer(k, "k", low=1, high=subset.size)
    lam, V = _top_positive(K, tol, k, "K")
    return _overlap(K, tol, subset, k, lam, V, "K[subset][:, subset]")


def context_overlaps(K, subsets, k: int) -> np.ndarray:
    """``context_overlap`` for several contexts, decomposing ``K`` once: ``(S, k)``.

    Args:
        K: ``(N, N)`` positive semi-definite kernel.
        subsets: sequence of ``S`` index arrays, each as ``subset`` of ``context_overlap``.
        k: number of directions compared, at most the size of the smallest subset.
    """
    K, tol = _kernel(K, "K")
    if isinstance(subsets, (str, bytes, dict, np.ndarray)) or not hasattr(subsets, "__iter__"):
        raise TypeError(f"subsets must be a sequence of index arrays; got {_checks.describe(subsets)}")
    subsets = [_subset(s, K.shape[0], f"subsets[{i}]") for i, s in enumerate(subsets)]
    if not subsets:
        raise ValueError("subsets must hold at least one index array; got none")
    k = _checks.integer(k, "k", low=1, high=min(s.size for s in subsets))
    lam, V = _top_positive(K, tol, k, "K")
    return np.array([_overlap(K, tol, s, k, lam, V, f"K[subsets[{i}]][:, subsets[{i}]]") for i, s in enumerate(subsets)])


def effective_rank(K, *, kind: str = "entropy") -> float:
    """Effective rank of a positive semi-definite kernel ``(N, N)``.

    ``kind="entropy"``: ``exp(-sum_k p_k log p_k)``, ``p = lambda / sum lambda``;
    ``kind="participation"``: ``(sum lambda)^2 / sum lambda^2``. Both equal r for r equal
    nonzero eigenvalues. Eigenvalues below round-off of the input's dtype (1e3 units of it,
    relative to the largest; negative ones included) are set to zero.
    """
    K, tol = _kernel(K, "K")
    kind = _checks.choice(kind, "kind", ("entropy", "participation"))
    lam = np.clip(np.linalg.eigvalsh((K + K.T) / 2), 0.0, None)[::-1]
    if _positive_rank(lam, tol) == 0:
        raise ValueError("K must have a positive eigenvalue (its effective rank is undefined otherwise); got none")
    lam = np.where(lam > tol * lam[0], lam, 0.0)
    if kind == "participation":
        return float(lam.sum() ** 2 / np.sum(lam**2))
    p = lam / lam.sum()
    p = p[p > 0]
    return float(np.exp(-np.sum(p * np.log(p))))


def _diffusion(K: np.ndarray, k: int, epsilon: float | None, t: int):
    n = K.shape[0]
    diag = np.diag(K)
    d2 = np.clip(diag[:, None] + diag[None, :] - 2 * K, 0.0, None)
    if epsilon is None:
        off = d2[~np.eye(n, dtype=bool)]
        epsilon = float(np.median(off)) if np.median(off) > 0 else float(off.mean())
        if not epsilon > 0:
            raise ValueError("K must separate at least two inputs (all kernel distances are zero); got a constant kernel")
    W = np.exp(-d2 / epsilon)
    deg = W.sum(axis=1)
    S = W / np.sqrt(deg[:, None] * deg[None, :])  # symmetric conjugate of P
    mu, V = np.linalg.eigh(S)
    mu, V = mu[::-1], V[:, ::-1]
    psi = V / np.sqrt(deg)[:, None]
    psi = psi / np.linalg.norm(psi[:, :1]) * np.sqrt(n)  # psi_0 is constant; fix the scale
    return psi[:, 1 : k + 1] * mu[1 : k + 1] ** t, mu[1 : k + 1]


def diffusion_map(K, k: int, *, epsilon: float | None = None, t: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Diffusion-map embedding of the inputs under a kernel (Coifman & Lafon 2006).

    The kernel defines distances ``d^2(x, x') = K(x,x) + K(x',x') - 2 K(x,x')`` (distances in
    its feature space); affinities are ``W = exp(-d^2 / epsilon)`` (``epsilon`` defaults to the
    median of ``d^2``), the Markov matrix is ``P = D^{-1} W``. Its leading non-trivial right
    eigenvectors ``psi_1..psi_k``, scaled by ``mu^t``, are the coordinates.

    Args:
        K: ``(N, N)`` kernel.
        k: embedding dimension, ``1 <= k < N``.
        epsilon: affinity scale, positive (default: the median squared distance).
        t: diffusion time, a non-negative integer.

    Returns:
        ``(coordinates (N, k), eigenvalues mu_1..mu_k)``.
    """
    K, _ = _kernel(K, "K")
    n = K.shape[0]
    k = _checks.integer(k, "k", low=1, high=n - 1)
    if epsilon is not None:
        epsilon = _checks.real(epsilon, "epsilon", low=0.0, low_open=True)
    t = _checks.integer(t, "t", low=0)
    return _diffusion(K, k, epsilon, t)


def cluster(K, n_clusters: int, *, seed: int = 0, dim: int | None = None, restarts: int = 10) -> np.ndarray:
    """Cluster the inputs with a kernel: k-means on its diffusion map.

    Args:
        K: ``(N, N)`` kernel.
        n_clusters: number of clusters, ``2 <= n_clusters <= N``.
        seed: seeds k-means (scipy ``kmeans2``, ``++`` initialisation); the best of ``restarts``
            runs (lowest within-cluster sum of squares) is kept.
        dim: embedding dimension (default ``n_clusters - 1``), ``1 <= dim < N``.
        restarts: number of k-means runs, at least 1.

    Returns:
        ``(N,)`` integer labels in ``[0, n_clusters)``.
    """
    K, _ = _kernel(K, "K")
    n = K.shape[0]
    n_clusters = _checks.integer(n_clusters, "n_clusters", low=2, high=n)
    seed = _checks.integer(seed, "seed", low=0)
    restarts = _checks.integer(restarts, "restarts", low=1)
    dim = n_clusters - 1 if dim is None else _checks.integer(dim, "dim", low=1)
    if dim > n - 1:
        raise ValueError(f"dim must be <= N - 1 = {n - 1}; got {dim}")
    Z, _ = _diffusion(K, dim, None, 1)
    Z = Z / (np.abs(Z).max() + 1e-300)
    rng = np.random.default_rng(seed)
    best, best_cost = None, np.inf
    for _ in range(restarts):
        centroids, labels = kmeans2(Z, n_clusters, minit="++", rng=rng)
        cost = float(np.sum((Z - centroids[labels]) ** 2))
        if best is None or cost < best_cost:
            best, best_cost = labels, cost
    return np.asarray(best)


def adjusted_rand_index(a, b) -> float:
    """Adjusted Rand index between two labellings ``(N,)`` of the same ``N >= 2`` inputs.

    Hubert & Arabie (1985): 1 for identical partitions (up to renaming), about 0 for
    independent ones. Labels may be integers, booleans or strings.
    """
    a = _checks.array(a, "a", ndim=1, kind="any", min_len=2)
    b = _checks.array(b, "b", ndim=1, kind="any", min_len=2)
    _checks.same_shape(a, b, "a", "b")
    for arr, name in ((a, "a"), (b, "b")):
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must hold finite labels; got NaN or inf")
        if arr.dtype.kind == "c":
            raise TypeError(f"{name} must hold integer, boolean or string labels; got dtype {arr.dtype}")
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    table = np.zeros((ia.max() + 1, ib.max() + 1))
    np.add.at(table, (ia.ravel(), ib.ravel()), 1)
    comb = lambda m: m * (m - 1) / 2.0
    index = comb(table).sum()
    rows, cols = comb(table.sum(axis=1)).sum(), comb(table.sum(axis=0)).sum()
    expected = rows * cols / comb(a.size)
    maximum = (rows + cols) / 2
    if maximum == expected:  # both partitions trivial in the same way (one block, or all singletons)
        return 1.0
    return float((index - expected) / (maximum - expected))
