"""Quantitative genetics on the genotype-phenotype map: the G-matrix is the eNTK.

The dictionary of seed 000 §0 and seed 001 §2: parameters ``theta`` (P,) are the genome, the
model's outputs on a fixed batch ``z = f(theta)`` (O,) are the phenotype, ``J = dz/dtheta``
(O, P) is the developmental map, and Lande's multivariate breeder's equation (Lande 1979)

    Delta zbar = G beta,      G = J M J^T,      beta = grad_{zbar} ln Wbar,

turns a selection gradient ``beta`` into the response of the mean phenotype, with ``M`` (P, P)
the mutational covariance. With ``M = I``, ``G = J J^T`` is the eNTK ``Theta``.

This module holds:

* ``check_covariance``, ``g_matrix``, ``whitening_factor``, ``whitened_jacobian``: the metric
  side (``M = S S^T``, the whitened Jacobian ``J S`` of seed 001 §2);
* ``genotype_phenotype_map``, ``sample_population``, ``selection_weights``,
  ``response_to_selection``, the fitness functions and ``stabilising_gradient``: a
  one-generation selection simulation, to compare with ``G beta``;
* ``gradient_covariance``, ``adam_metric``: the ML stand-ins for ``M`` (seed 001 §1-§2);
* ``block_modularity``, ``pleiotropy``, ``polygenicity``, ``density``, ``neutrality``,
  ``constraints``, ``genome_null_space``, ``phenotype_null_space``: the bio dictionary of
  seed 000 §4 as measurements;
* ``pushforward``: the G-matrix of any readout of the phenotype (seed 001 §2, "the phenotype is
  free").

Genotypes are flat vectors (use ``genotype_phenotype_map`` to flatten a model's pytree).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from jax.flatten_util import ravel_pytree

from . import _checks
from . import models as _models
from . import curvature as _curvature

__all__ = [
    "check_covariance",
    "g_matrix",
    "breeders_prediction",
    "whitening_factor",
    "whitened_jacobian",
    "genotype_phenotype_map",
    "sample_population",
    "directional_fitness",
    "stabilising_fitness",
    "stabilising_gradient",
    "selection_weights",
    "response_to_selection",
    "gradient_covariance",
    "adam_metric",
    "block_modularity",
    "density",
    "pleiotropy",
    "polygenicity",
    "neutrality",
    "constraints",
    "genome_null_space",
    "phenotype_null_space",
    "pushforward",
]


# ----------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------


def _matrix(a: Any, name: str, *, ndim: int = 2) -> np.ndarray:
    """A finite, non-empty real array with ``ndim`` axes (integers converted to float64)."""
    return _checks.array(a, name, ndim=ndim, kind="real")


def _rtol(rtol: Any, name: str = "rtol") -> float:
    return _checks.real(rtol, name, low=0.0, high=1.0, low_open=True, high_open=True)


def _width(width: Any) -> float:
    return _checks.real(width, "width", low=0.0, low_open=True)


def check_covariance(M: Any, name: str = "M", *, dim: int | None = None, rtol: float = 1e-8) -> np.ndarray:
    """Validate a covariance: a symmetric positive semi-definite ``(D, D)`` matrix.

    A 1-D array ``(D,)`` of non-negative numbers is accepted as a diagonal covariance and
    returned as ``np.diag``.

    Args:
        M: ``(D, D)`` or ``(D,)``.
        name: how error messages call the argument.
        dim: the required ``D`` (``None``: any).
        rtol: asymmetry and negative eigenvalues up to ``rtol * max|M|`` count as round-off.

    Returns:
        the ``(D, D)`` matrix, symmetrised.

    Raises:
        ValueError: wrong shape, NaN/inf, not symmetric, or a negative eigenvalue.
    """
    rtol = _rtol(rtol)
    if dim is not None:
        dim = _checks.integer(dim, "dim", low=1)
    M = _checks.array(M, name, ndim=(1, 2), kind="real")
    if M.ndim == 1:
        if np.any(M < 0):
            raise ValueError(
                f"{name} as a 1-D array is a diagonal covariance and must be non-negative; "
                f"its smallest entry is {M.min():.3g}"
            )
        M = np.diag(M)
    if M.shape[0] != M.shape[1]:
        raise ValueError(f"{name} must be a square (D, D) covariance; got shape {M.shape}")
    if dim is not None and M.shape[0] != dim:
        raise ValueError(f"{name} must have shape ({dim}, {dim}) to match the genotype; got {M.shape}")
    scale = max(float(np.abs(M).max()), np.finfo(np.float64).tiny)
    asym = float(np.abs(M - M.T).max())
    if asym > rtol * scale:
        raise ValueError(f"{name} must be symmetric; max |{name} - {name}^T| = {asym:.3g} (scale {scale:.3g})")
    M = (M + M.T) / 2
    lowest = float(np.linalg.eigvalsh(M)[0])
    if lowest < -rtol * scale * M.shape[0]:
        raise ValueError(
            f"{name} must be positive semi-definite; its smallest eigenvalue is {lowest:.3g} (scale {scale:.3g})"
        )
    return M


def _jacobian(J: Any, name: str = "jacobian") -> np.ndarray:
    return _matrix(J, name)


# ----------------------------------------------------------------------------------------
# the metric side: G = J M J^T and whitening
# ----------------------------------------------------------------------------------------


def g_matrix(jacobian: Any, M: Any = None) -> np.ndarray:
    """The G-matrix ``G = J M J^T`` (seed 000 §0; Lande 1979).

    Args:
        jacobian: ``(O, P)``, ``J = dz/dtheta``.
        M: mutational covariance ``(P, P)`` or diagonal ``(P,)``; ``None`` is ``I``, giving the
            eNTK ``Theta = J J^T``.

    Returns:
        ``(O, O)`` symmetric positive semi-definite.
    """
    J = _jacobian(jacobian)
    if M is None:
        G = J @ J.T
    else:
        G = J @ check_covariance(M, "M", dim=J.shape[1]) @ J.T
    return (G + G.T) / 2


def breeders_prediction(jacobian: Any, M: Any, beta: Any) -> np.ndarray:
    """Lande's predicted response ``Delta zbar = J M J^T beta``.

    Args:
        jacobian: ``(O, P)``; M: ``(P, P)``, ``(P,)`` or ``None`` (identity); beta: ``(O,)``.

    Returns:
        ``(O,)``.
    """
    J = _jacobian(jacobian)
    b = _matrix(beta, "beta", ndim=1)
    if b.shape[0] != J.shape[0]:
        raise ValueError(f"beta must have one entry per trait, shape ({J.shape[0]},); got {b.shape}")
    return g_matrix(J, M) @ b


def whitening_factor(M: Any, *, rtol: float = 1e-12) -> np.ndarray:
    """The symmetric square root ``S = U diag(sqrt(lambda)) U^T`` of ``M = U diag(lambda) U^T``.

    ``S S^T = M`` (seed 001 §2). The symmetric root keeps the coordinates of the genome (the
    weights), so the parameter-side kernel ``S J^T J S`` is still indexed by weights.
    Eigenvalues below ``rtol * lambda_max`` are set to zero.

    Args:
        M: ``(P, P)`` or diagonal ``(P,)``.

    Returns:
        ``(P, P)``.
    """
    rtol = _rtol(rtol)
    M = check_covariance(M, "M")
    lam, U = np.linalg.eigh(M)
    lam = np.where(lam > rtol * max(lam.max(), 0.0), lam, 0.0)
    return (U * np.sqrt(lam)) @ U.T


def whitened_jacobian(jacobian: Any, M: Any) -> np.ndarray:
    """The Jacobian in the metric of the noise, ``J S`` with ``M = S S^T`` (seed 001 §2).

    Its output-side Gram ``(J S)(J S)^T = J M J^T = G`` (task clustering) and its parameter-side
    Gram ``(J S)^T (J S)`` (circuit clustering) share their nonzero spectrum.

    Args:
        jacobian: ``(O, P)``; M: ``(P, P)`` or ``(P,)``.

    Returns:
        ``(O, P)``.
    """
    J = _jacobian(jacobian)
    M = check_covariance(M, "M", dim=J.shape[1])
    return J @ whitening_factor(M)


# ----------------------------------------------------------------------------------------
# a population under selection
# ----------------------------------------------------------------------------------------


def genotype_phenotype_map(f: Callable, params: Any, x: Any) -> tuple[Callable, np.ndarray, Callable]:
    """Turn a model into a map from a flat genotype to a flat phenotype.

    Args:
        f: model ``f(params, x) -> (N, C)``.
        params: pytree (the genotype at which the map is built; P numbers).
        x: ``(N, ...)`` the fixed inputs ("environments") on which the phenotype is read.

    Returns:
        ``(phenotype, theta, unravel)``: ``phenotype(theta (P,)) -> (N*C,)`` with entry
        ``n*C + i = f_i(x_n)`` (the row order of ``helpers.ntk.flatten``), the flat genotype
        ``theta`` (P,), and ``unravel`` mapping a flat vector back to the pytree.
    """
    _checks.function(f, "f")
    _checks.params_tree(params, "params")
    x_arr = _checks.array(x, "x", kind="any")
    if x_arr.dtype.kind not in "fiub" or x_arr.ndim < 1:
        raise ValueError(f"x must be a numeric batch of inputs (N, ...); got {_checks.describe(x_arr)}")
    theta, unravel = ravel_pytree(params)
    x = jnp.asarray(x) if hasattr(x, "dtype") else jnp.asarray(x_arr)
    try:
        out = jax.eval_shape(f, params, x)
    except Exception as err:  # noqa: BLE001 - re-raised with the arguments named
        raise ValueError(
            f"f(params, x) failed for x of shape {tuple(x.shape)}: params and x must fit the model f; "
            f"the call raised {type(err).__name__}: {err}"
        ) from err
    if not hasattr(out, "shape") or len(out.shape) != 2 or out.shape[0] != x.shape[0]:
        got = getattr(out, "shape", type(out).__name__)
        raise ValueError(f"f(params, x) must return outputs of shape (N, C) = ({x.shape[0]}, C); got {got}")
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(f"f(params, x) must return floating-point outputs; got dtype {out.dtype}")

    def phenotype(t):
        return f(unravel(t), x).reshape(-1)

    return phenotype, np.asarray(theta), unravel


def sample_population(M: Any, *, key: jax.Array, size: int, antithetic: bool = True, exact_moments: bool = True) -> np.ndarray:
    """Genotype deviations ``delta_k ~ N(0, M)`` around the population mean.

    With ``exact_moments`` the sample is centred and whitened so that its mean is exactly 0 and
    its covariance ``(1/size) sum_k delta_k delta_k^T`` is exactly ``M`` (a "quasi-Gaussian"
    population: selection then acts on the right first and second moments, leaving only
    higher-moment sampling error). With ``antithetic`` the sample is made of pairs
    ``+delta, -delta``, so every odd moment vanishes exactly.

    Args:
        M: ``(P, P)`` or ``(P,)`` mutational covariance.
        key: PRNG key (keyword-only).
        size: number of genotypes (even when ``antithetic``; ``> P`` when ``exact_moments``).

    Returns:
        ``(size, P)`` float64.
    """
    M = check_covariance(M, "M")
    _checks.rng_key(key, "key")
    size = _checks.integer(size, "size", low=2)
    antithetic = _checks.boolean(antithetic, "antithetic")
    exact_moments = _checks.boolean(exact_moments, "exact_moments")
    p = M.shape[0]
    if antithetic and size % 2:
        raise ValueError(f"size must be even for an antithetic population (pairs +delta, -delta); got {size}")
    half = size // 2 if antithetic else size
    if exact_moments and (2 * half if antithetic else half - 1) < p:
        raise ValueError(
            f"size = {size} is too small to give a sample covariance of full rank P = {p}; "
            f"need size > P or exact_moments=False"
        )
    eps = np.asarray(_models.normal(key, (half, p), dtype=jnp.float64 if jax.config.jax_enable_x64 else jnp.float32), dtype=np.float64)
    if antithetic:
        eps = np.concatenate([eps, -eps], axis=0)
    if exact_moments:
        eps = eps - eps.mean(axis=0)
        cov = eps.T @ eps / eps.shape[0]
        lower = np.linalg.cholesky(cov)
        eps = scipy.linalg.solve_triangular(lower, eps.T, lower=True).T
    return eps @ whitening_factor(M).T


def directional_fitness(direction: Any) -> Callable:
    """Log-fitness of directional selection, ``ln W(z) = b . z`` (an exponential fitness).

    For a phenotype distribution of any shape translated by its mean,
    ``ln Wbar(zbar) = b . zbar + const``, so the selection gradient is exactly ``beta = b``.

    Args:
        direction: ``(O,)`` the vector ``b``.

    Returns:
        ``log_fitness(z (..., O)) -> (...)``.
    """
    b = _matrix(direction, "direction", ndim=1)

    def log_fitness(z):
        z = jnp.asarray(z)
        if z.shape[-1] != b.shape[0]:
            raise ValueError(f"phenotypes must have {b.shape[0]} traits (the direction's length); got shape {z.shape}")
        return z @ b

    return log_fitness


def stabilising_fitness(optimum: Any, width: float) -> Callable:
    """Log-fitness of Gaussian stabilising selection, ``ln W(z) = -|z - o|^2 / (2 omega^2)``.

    Args:
        optimum: ``(O,)`` the optimum ``o``; width: ``omega > 0``.

    Returns:
        ``log_fitness(z (..., O)) -> (...)``.
    """
    o = _matrix(optimum, "optimum", ndim=1)
    width = _width(width)

    def log_fitness(z):
        z = jnp.asarray(z)
        if z.shape[-1] != o.shape[0]:
            raise ValueError(f"phenotypes must have {o.shape[0]} traits (the optimum's length); got shape {z.shape}")
        return -jnp.sum((z - o) ** 2, axis=-1) / (2.0 * width**2)

    return log_fitness


def stabilising_gradient(mean_phenotype: Any, phenotype_covariance: Any, optimum: Any, width: float) -> np.ndarray:
    """The selection gradient of Gaussian stabilising selection on a Gaussian phenotype.

    With ``z ~ N(zbar, P)`` and ``W(z) = exp(-|z - o|^2 / (2 omega^2))``,
    ``Wbar(zbar) ∝ exp(-(zbar - o)^T (omega^2 I + P)^{-1} (zbar - o) / 2)`` and

        beta = grad_{zbar} ln Wbar = (omega^2 I + P)^{-1} (o - zbar).

    Args:
        mean_phenotype: ``(O,)``; phenotype_covariance: ``(O, O)``; optimum: ``(O,)``;
        width: ``omega > 0``.

    Returns:
        ``(O,)``.
    """
    zbar = _matrix(mean_phenotype, "mean_phenotype", ndim=1)
    o = _matrix(optimum, "optimum", ndim=1)
    P = check_covariance(phenotype_covariance, "phenotype_covariance", dim=zbar.shape[0])
    if o.shape != zbar.shape:
        raise ValueError(f"optimum must have the shape of mean_phenotype {zbar.shape}; got {o.shape}")
    width = _width(width)
    return np.linalg.solve(width**2 * np.eye(zbar.shape[0]) + P, o - zbar)


def selection_weights(log_fitness_values: Any) -> np.ndarray:
    """Relative fitnesses ``w_k / mean(w)`` from log-fitnesses ``ln w_k`` (mean 1), overflow-safe.

    Args:
        log_fitness_values: ``(N,)``.

    Returns:
        ``(N,)``.
    """
    a = _matrix(log_fitness_values, "log_fitness_values", ndim=1)
    w = np.exp(a - a.max())
    return w / w.mean()


def response_to_selection(
    phenotype: Callable, theta_bar: Any, deviations: Any, log_fitness: Callable
) -> dict[str, np.ndarray]:
    """One generation of truncation-free selection on a population, simulated.

    Parents ``theta_k = thetabar + delta_k`` develop phenotypes ``z_k = f(theta_k)`` and
    reproduce in proportion to their fitness ``w_k``; offspring inherit the fitness-weighted
    mean genotype ``thetabar' = thetabar + sum_k w_k delta_k / sum_k w_k`` and carry the same
    deviations again (common random numbers: the offspring generation's variation is the
    parents', so the difference of the two means carries no sampling noise of its own).

    Args:
        phenotype: ``phenotype(theta (P,)) -> (O,)`` (see ``genotype_phenotype_map``).
        theta_bar: ``(P,)`` mean genotype.
        deviations: ``(N, P)`` (see ``sample_population``).
        log_fitness: ``log_fitness(z (N, O)) -> (N,)``.

    Returns:
        dict with ``weights`` (N,) relative fitness, ``genotype_shift`` (P,) the selection
        differential on the genotype, ``mean_phenotype`` (O,) of the parents,
        ``selection_differential`` (O,) ``S = Cov(w, z)``, ``phenotype_covariance`` (O, O),
        and ``response`` (O,) ``Delta zbar``, the offspring mean minus the parents' mean.
    """
    _checks.function(phenotype, "phenotype", "phenotype(theta (P,)) -> (O,)")
    _checks.function(log_fitness, "log_fitness", "log_fitness(z (N, O)) -> (N,)")
    theta_bar = _matrix(theta_bar, "theta_bar", ndim=1)
    delta = _matrix(deviations, "deviations")
    if delta.shape[1] != theta_bar.shape[0]:
        raise ValueError(
            f"deviations must have shape (N, {theta_bar.shape[0]}) to match theta_bar; got {delta.shape}"
        )
    try:
        out = jax.eval_shape(phenotype, jnp.asarray(theta_bar))
    except Exception as err:  # noqa: BLE001 - re-raised with the argument named
        raise ValueError(f"phenotype(theta_bar) failed: phenotype must map a genotype (P,) to traits (O,); "
                         f"the call raised {type(err).__name__}: {err}") from err
    if not hasattr(out, "shape") or len(out.shape) != 1:
        raise ValueError(f"phenotype must return a 1-D trait vector (O,); got {getattr(out, 'shape', type(out).__name__)}")
    develop = jax.jit(jax.vmap(phenotype))
    dtype = jnp.asarray(theta_bar).dtype
    parents = jnp.asarray(theta_bar[None, :] + delta, dtype=dtype)
    z = np.asarray(develop(parents), dtype=np.float64)
    if not np.all(np.isfinite(z)):
        raise ValueError("phenotype returned NaN or inf for some genotypes theta_bar + deviations")
    lf = np.asarray(log_fitness(z), dtype=np.float64)
    if lf.shape != (z.shape[0],):
        raise ValueError(f"log_fitness must return one value per individual, shape ({z.shape[0]},); got {lf.shape}")
    if not np.all(np.isfinite(lf)):
        raise ValueError("log_fitness returned NaN or inf for some phenotypes")
    w = selection_weights(lf)
    shift = (w[:, None] * delta).sum(axis=0) / w.sum()
    offspring = jnp.asarray(theta_bar[None, :] + shift[None, :] + delta, dtype=dtype)
    z_next = np.asarray(develop(offspring), dtype=np.float64)
    zbar = z.mean(axis=0)
    zc = z - zbar
    return {
        "weights": w,
        "genotype_shift": shift,
        "mean_phenotype": zbar,
        "selection_differential": (w[:, None] * zc).mean(axis=0),
        "phenotype_covariance": zc.T @ zc / z.shape[0],
        "response": (z_next - z).mean(axis=0),
    }


# ----------------------------------------------------------------------------------------
# the ML stand-ins for M
# ----------------------------------------------------------------------------------------


def gradient_covariance(per_example_gradients: Any) -> np.ndarray:
    """The gradient-noise covariance ``C = (1/n) sum_i (g_i - gbar)(g_i - gbar)^T`` (seed 001 §1).

    The second moment of per-example gradients with the mean-gradient outer product removed:
    "the centred kernel" of seed 001 §1.

    Args:
        per_example_gradients: ``(n, P)``, row ``i`` the gradient of example ``i``'s loss.

    Returns:
        ``(P, P)``.
    """
    g = _matrix(per_example_gradients, "per_example_gradients")
    if g.shape[0] < 2:
        raise ValueError(f"per_example_gradients needs at least 2 examples (rows); got shape {g.shape}")
    # one implementation of C for the whole book: helpers.curvature (the Gauss-Newton chapter)
    return _curvature.gradient_covariance(g)


def adam_metric(covariance: Any, second_moment: Any, *, eps: float = 1e-8) -> np.ndarray:
    """The covariance of Adam's preconditioned update noise, ``D^{-1} C D^{-1}``.

    Adam divides each gradient coordinate by ``d = sqrt(v) + eps`` (``v`` its running second
    moment), so gradient noise of covariance ``C`` becomes update noise of covariance
    ``D^{-1} C D^{-1}``, ``D = diag(d)``: the Fisher-flavoured metric that adaptive optimisers
    smuggle into ``M`` (seed 000 §4, seed 001 §2).

    Args:
        covariance: ``(P, P)``; second_moment: ``(P,)`` non-negative; eps: Adam's epsilon.

    Returns:
        ``(P, P)``.
    """
    C = check_covariance(covariance, "covariance")
    v = _matrix(second_moment, "second_moment", ndim=1)
    if v.shape[0] != C.shape[0]:
        raise ValueError(f"second_moment must have shape ({C.shape[0]},) to match covariance; got {v.shape}")
    if np.any(v < 0):
        raise ValueError("second_moment must be non-negative (a running mean of squared gradients)")
    eps = _checks.real(eps, "eps", low=0.0)
    d = np.sqrt(v) + eps
    if np.any(d == 0):
        raise ValueError("second_moment has zero entries and eps = 0: the preconditioner is singular")
    A = C / d[:, None] / d[None, :]
    return (A + A.T) / 2


# ----------------------------------------------------------------------------------------
# the dictionary (seed 000 §4)
# ----------------------------------------------------------------------------------------


def _labels(blocks: Any, n: int) -> np.ndarray:
    if isinstance(blocks, (list, tuple)) and blocks and all(np.ndim(b) == 1 and not np.isscalar(b) for b in blocks):
        labels = np.full(n, -1)
        for i, idx in enumerate(blocks):
            idx = np.asarray(idx)
            if idx.dtype.kind not in "iu":
                raise TypeError(f"blocks[{i}] must be an array of integer trait indices; got dtype {idx.dtype}")
            if np.any((idx < 0) | (idx >= n)):
                raise ValueError(f"blocks[{i}] has indices outside [0, {n})")
            if np.any(labels[idx] >= 0):
                raise ValueError(f"blocks must be disjoint; blocks[{i}] repeats an index")
            labels[idx] = i
        if np.any(labels < 0):
            raise ValueError(f"blocks must cover all {n} traits; {int((labels < 0).sum())} are in no block")
        return labels
    labels = np.asarray(blocks)
    if labels.shape != (n,):
        raise ValueError(f"blocks must be a list of index arrays or one label per trait, shape ({n},); got shape {labels.shape}")
    return labels


def block_modularity(G: Any, blocks: Any, *, correlation: bool = True) -> float:
    """Modularity: the fraction of ``G``'s squared Frobenius mass inside the diagonal blocks.

    ``1`` for a block-diagonal ``G`` (seed 000 §4: "modularity = G approximately
    block-diagonal"); for a ``G`` with no structure it is about the fraction of entries inside
    the blocks. With ``correlation`` (default) the measure is taken on the genetic correlation
    matrix ``D^{-1/2} G D^{-1/2}`` (``D = diag G``), so that a module with small variances counts
    as much as one with large variances; traits with zero variance are left out.

    Args:
        G: ``(O, O)``; blocks: a list of disjoint index arrays covering ``range(O)``, or
            ``(O,)`` labels.
        correlation: measure on correlations (``True``) or on ``G`` itself.

    Returns:
        float in ``[0, 1]``.
    """
    G = _matrix(G, "G")
    if G.shape[0] != G.shape[1]:
        raise ValueError(f"G must be square (O, O); got {G.shape}")
    correlation = _checks.boolean(correlation, "correlation")
    labels = _labels(blocks, G.shape[0])
    if correlation:
        var = np.diag(G).copy()
        if np.any(var < 0):
            raise ValueError("G has negative diagonal entries; it is not a covariance")
        keep = var > 0
        sd = np.sqrt(var[keep])
        G = G[np.ix_(keep, keep)] / sd[:, None] / sd[None, :]
        labels = labels[keep]
    total = float((G**2).sum())
    if total == 0:
        raise ValueError("G is identically zero; modularity is undefined")
    inside = labels[:, None] == labels[None, :]
    return float((G[inside] ** 2).sum() / total)


def density(A: Any, *, rtol: float = 1e-8) -> float:
    """Fraction of entries of ``A`` with ``|A_ij| > rtol * max|A|``."""
    A = _matrix(A, "A")
    rtol = _rtol(rtol)
    return float((np.abs(A) > rtol * np.abs(A).max()).mean()) if A.size and np.abs(A).max() > 0 else 0.0


def pleiotropy(jacobian: Any, *, rtol: float = 1e-8) -> np.ndarray:
    """Pleiotropy: for each gene, the number of traits it affects (nonzero entries of column of J).

    "J dense: one gene, many traits" (seed 000 §4). ``density(J)`` is the summary.

    Args:
        jacobian: ``(O, P)``.

    Returns:
        ``(P,)`` integer counts (entries above ``rtol * max|J|``).
    """
    J = _jacobian(jacobian)
    rtol = _rtol(rtol)
    return (np.abs(J) > rtol * np.abs(J).max()).sum(axis=0)


def polygenicity(jacobian: Any, *, rtol: float = 1e-8) -> np.ndarray:
    """Polygenicity: for each trait, the number of genes in its column of ``J^+``.

    Column ``t`` of the pseudo-inverse is the smallest genotype change that moves trait ``t``
    alone by one unit (when the traits are independent), so its support is the set of genes
    the trait draws on: "J^+ dense: one trait, many genes" (seed 000 §4).

    Args:
        jacobian: ``(O, P)``.

    Returns:
        ``(O,)`` integer counts (entries of ``J^+`` above ``rtol * max|J^+|``).
    """
    J = _jacobian(jacobian)
    rtol = _rtol(rtol)
    Jp = np.linalg.pinv(J, rcond=1e-10)
    return (np.abs(Jp) > rtol * np.abs(Jp).max()).sum(axis=0)


def _rank(A: np.ndarray, rtol: float) -> int:
    s = np.linalg.svd(A, compute_uv=False)
    return int((s > rtol * s.max()).sum()) if s.size and s.max() > 0 else 0


def neutrality(jacobian: Any, *, rtol: float = 1e-8) -> int:
    """Neutrality: ``dim ker J = P - rank J``, genome directions that leave the phenotype unchanged.

    The genome-side degeneracy of seed 000 §4 (what singular learning theory counts).
    Singular values below ``rtol * s_max`` count as zero.
    """
    J = _jacobian(jacobian)
    return J.shape[1] - _rank(J, _rtol(rtol))


def constraints(G: Any, *, rtol: float = 1e-8) -> int:
    """Genetic constraints: the number of zero eigenvalues of ``G`` (phenotype-side).

    Trait combinations ``u`` with ``u^T G u = 0`` have no genetic variance and cannot respond to
    any selection gradient: the dual of neutrality (seed 000 §4). Eigenvalues below
    ``rtol * lambda_max`` count as zero.
    """
    G = check_covariance(G, "G")
    rtol = _rtol(rtol)
    lam = np.linalg.eigvalsh(G)
    return int((lam <= rtol * lam.max()).sum()) if lam.max() > 0 else G.shape[0]


def genome_null_space(jacobian: Any, *, rtol: float = 1e-8) -> np.ndarray:
    """Orthonormal basis ``(P, P - rank J)`` of ``ker J`` (neutral mutations)."""
    return scipy.linalg.null_space(_jacobian(jacobian), rcond=_rtol(rtol))


def phenotype_null_space(G: Any, *, rtol: float = 1e-8) -> np.ndarray:
    """Orthonormal basis ``(O, #constraints)`` of the null space of ``G`` (constrained traits)."""
    G = check_covariance(G, "G")
    rtol = _rtol(rtol)
    lam, U = np.linalg.eigh(G)
    return U[:, lam <= rtol * max(lam.max(), 0.0)] if lam.max() > 0 else U


# ----------------------------------------------------------------------------------------
# the phenotype is free (seed 001 §2, §5)
# ----------------------------------------------------------------------------------------


def pushforward(G: Any, readout_jacobian: Any) -> np.ndarray:
    """The G-matrix of a readout ``q(z)`` of the phenotype, by the chain rule: ``R G R^T``.

    With ``R = dq/dz`` ``(Q, O)``, ``dq/dtheta = R J`` so ``G_q = R J M J^T R^T = R G R^T``.

    Args:
        G: ``(O, O)``; readout_jacobian: ``(Q, O)``.

    Returns:
        ``(Q, Q)``.
    """
    G = _matrix(G, "G")
    R = _matrix(readout_jacobian, "readout_jacobian")
    if G.shape[0] != G.shape[1]:
        raise ValueError(f"G must be square (O, O); got {G.shape}")
    if R.shape[1] != G.shape[0]:
        raise ValueError(f"readout_jacobian must have shape (Q, {G.shape[0]}) to act on G; got {R.shape}")
    out = R @ G @ R.T
    return (out + out.T) / 2
