"""Modular addition: data, the quadratic 1-hidden-layer MLP, and training (seed 002 §4).

Settings follow ``shared/REFERENCE_FACTS.md`` (the paper's experiments):

* inputs: all ``p**2`` pairs ``(a, b)``, encoded as ``concat(one_hot(a), one_hot(b))`` (length
  ``2p``), in row-major order ``index = a * p + b``; target ``one_hot((a + b) mod p)``;
* model (mean-field, no biases): ``f(x) = (1/n) W2 ((W1 x) / sqrt(2p))**2`` with
  ``W1: (n, 2p)``, ``W2: (p, n)``, all weights N(0, 1) (seed 002 eq. 6 up to these scale factors);
* loss: mean squared error against the one-hot target, averaged over all entries;
* optimiser: AdamW (lr 0.05, weight decay 0.01), full batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import train as _train

__all__ = [
    "ModularData",
    "make_data",
    "init_params",
    "apply",
    "mse_loss",
    "accuracy",
    "train_model",
    "grokking_epoch",
    "closed_form_kernels",
    "expected_kernels_at_init",
]


@dataclass(frozen=True)
class ModularData:
    """All ``p**2`` inputs and a train/test split.

    Attributes:
        p: the modulus.
        x: ``(p*p, 2p)`` one-hot pairs, row ``a * p + b``.
        y: ``(p*p, p)`` one-hot sums.
        a, b: ``(p*p,)`` integer operands.
        train_idx, test_idx: disjoint index arrays covering ``range(p*p)``.
    """

    p: int
    x: np.ndarray
    y: np.ndarray
    a: np.ndarray
    b: np.ndarray
    train_idx: np.ndarray
    test_idx: np.ndarray


def make_data(p: int, *, train_fraction: float = 0.7, seed: int = 0, dtype=np.float32) -> ModularData:
    """All pairs ``(a, b)`` mod ``p`` with a random train/test split of ``round(train_fraction * p**2)``."""
    if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 2:
        raise ValueError(f"p must be an integer >= 2; got {p!r}")
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must lie in (0, 1); got {train_fraction}")
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    a, b = a.ravel(), b.ravel()
    eye = np.eye(p, dtype=dtype)
    x = np.concatenate([eye[a], eye[b]], axis=1)
    y = eye[(a + b) % p]
    perm = np.random.default_rng(seed).permutation(p * p)
    n_train = int(round(train_fraction * p * p))
    return ModularData(p, x, y, a, b, np.sort(perm[:n_train]), np.sort(perm[n_train:]))


def init_params(key: jax.Array, p: int, width: int, *, dtype=jnp.float32) -> dict:
    """``{"W1": (width, 2p), "W2": (p, width)}``, every entry N(0, 1)."""
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 1:
        raise ValueError(f"width must be a positive integer; got {width!r}")
    k1, k2 = jax.random.split(key)
    return {
        "W1": jax.random.normal(k1, (width, 2 * p), dtype),
        "W2": jax.random.normal(k2, (p, width), dtype),
    }


def apply(params: dict, x: jnp.ndarray) -> jnp.ndarray:
    """``f(x) = (1/n) W2 ((W1 x)/sqrt(2p))**2``: ``x (N, 2p) -> (N, p)``."""
    w1, w2 = params["W1"], params["W2"]
    if x.shape[-1] != w1.shape[1]:
        raise ValueError(f"x must have {w1.shape[1]} = 2p features; got shape {x.shape}")
    hidden = (x @ w1.T) / jnp.sqrt(w1.shape[1])
    return (hidden**2) @ w2.T / w1.shape[0]


def mse_loss(params: dict, x: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
    """Mean over all entries of ``(f(x) - y)**2``."""
    return jnp.mean((apply(params, x) - y) ** 2)


def accuracy(params: dict, x: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
    """Fraction of inputs whose arg-max output is the correct sum."""
    return jnp.mean(jnp.argmax(apply(params, x), axis=1) == jnp.argmax(y, axis=1))


def train_model(
    data: ModularData,
    *,
    width: int = 512,
    epochs: int = 500,
    lr: float = 0.05,
    weight_decay: float = 0.01,
    seed: int = 0,
    record_every: int | None = 1,
    record_at=None,
    keep_params: bool = True,
):
    """Full-batch AdamW on the training split; returns ``(params, History)``.

    The history records train/test loss and accuracy at every ``record_every`` epochs (one
    epoch = one full-batch step) and at the epochs listed in ``record_at`` (a sequence of
    ints, optional), and, if ``keep_params``, the parameters there.
    """
    xtr, ytr = jnp.asarray(data.x[data.train_idx]), jnp.asarray(data.y[data.train_idx])
    xte, yte = jnp.asarray(data.x[data.test_idx]), jnp.asarray(data.y[data.test_idx])
    params = init_params(jax.random.PRNGKey(seed), data.p, width)
    # Integer labels computed here, not inside the jitted metrics: an arg-max over a constant
    # one-hot matrix would be constant-folded by XLA at every compilation (slow, and it logs).
    labels_tr = jnp.asarray(np.argmax(data.y[data.train_idx], axis=1))
    labels_te = jnp.asarray(np.argmax(data.y[data.test_idx], axis=1))
    metrics = {
        "train_acc": lambda q: jnp.mean(jnp.argmax(apply(q, xtr), axis=1) == labels_tr),
        "test_acc": lambda q: jnp.mean(jnp.argmax(apply(q, xte), axis=1) == labels_te),
        "test_loss": lambda q: mse_loss(q, xte, yte),
    }
    return _train.train(
        lambda q: mse_loss(q, xtr, ytr),
        params,
        optax.adamw(lr, weight_decay=weight_decay),
        epochs,
        record_every=record_every,
        record_at=record_at,
        metrics=metrics,
        keep_params=keep_params,
    )


def grokking_epoch(steps: np.ndarray, test_acc: np.ndarray, *, threshold: float = 0.9) -> int | None:
    """First recorded step at which test accuracy reaches ``threshold`` (``None`` if never)."""
    steps, test_acc = np.asarray(steps), np.asarray(test_acc)
    if steps.shape != test_acc.shape:
        raise ValueError(f"steps and test_acc must have the same shape; got {steps.shape} and {test_acc.shape}")
    hit = np.flatnonzero(test_acc >= threshold)
    return int(steps[hit[0]]) if hit.size else None


# ----------------------------------------------------------------------------------------
# closed-form kernels (seed 002 App. B, eqs. 15-18, with this module's scale factors)
# ----------------------------------------------------------------------------------------


def _check_params(params) -> tuple[jnp.ndarray, jnp.ndarray]:
    if not isinstance(params, dict) or set(params) != {"W1", "W2"}:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise TypeError(f"params must be a dict with keys 'W1' and 'W2' (from init_params); got {got}")
    w1, w2 = jnp.asarray(params["W1"]), jnp.asarray(params["W2"])
    if w1.ndim != 2 or w2.ndim != 2 or w2.shape[1] != w1.shape[0]:
        raise ValueError(
            f"params must hold W1 (n, 2p) and W2 (p, n) with the same n; got W1 {w1.shape}, W2 {w2.shape}"
        )
    return w1, w2


def closed_form_kernels(params: dict, x1, x2=None, *, collapse: str | None = "class_mean") -> dict:
    """The layerwise eNTK of ``apply`` in closed form (seed 002 App. B, eqs. 16 and 18).

    With ``h(x) = W1 x / sqrt(2p)`` (``n`` hidden units) and ``f_i(x) = (1/n) sum_k W2_ik h_k(x)**2``,

        d f_i / d W1_km = (2 / n) W2_ik h_k(x) x_m / sqrt(2p)                 (eq. 15)
        K1_ij(x, x') = 2 / (p n**2) sum_k W2_ik W2_jk h_k(x) h_k(x') (x . x')   (eq. 16)
        d f_i / d W2_i'k = delta_ii' h_k(x)**2 / n                           (eq. 17)
        K2_ij(x, x') = delta_ij / n**2 sum_k h_k(x)**2 h_k(x')**2             (eq. 18)

    The paper's eqs. (16)/(18) are these with ``n = 1`` and no ``1/sqrt(2p)``; the factors
    here are those of the mean-field parametrisation of ``apply``.

    Args:
        params: ``{"W1": (n, 2p), "W2": (p, n)}``.
        x1: ``(N1, 2p)``; x2: ``(N2, 2p)`` or ``None`` for ``x1``.
        collapse: ``"class_mean"`` (mean over classes of ``K_ii``, ``(N1, N2)``) or ``None``
            (full ``(N1, N2, C, C)``).

    Returns:
        ``{"W1": K1, "W2": K2}``, keyed like ``helpers.ntk.layerwise_entk``; their sum is the eNTK.
    """
    w1, w2 = _check_params(params)
    if collapse not in (None, "class_mean"):
        raise ValueError(f"collapse must be None or 'class_mean'; got {collapse!r}")
    x1 = jnp.asarray(x1, dtype=w1.dtype)
    x2 = x1 if x2 is None else jnp.asarray(x2, dtype=w1.dtype)
    for name, x in (("x1", x1), ("x2", x2)):
        if x.ndim != 2 or x.shape[1] != w1.shape[1]:
            raise ValueError(f"{name} must be (N, {w1.shape[1]}) = (N, 2p); got shape {x.shape}")
    n, d = w1.shape
    c = w2.shape[0]
    h1 = x1 @ w1.T / jnp.sqrt(d)
    h2 = x2 @ w1.T / jnp.sqrt(d)
    overlap = x1 @ x2.T
    layer2 = (h1**2) @ (h2**2).T / n**2
    scale = 4.0 / (d * n**2)  # = 2 / (p n**2)
    if collapse == "class_mean":
        readout = jnp.sum(w2**2, axis=0) / c  # (n,): (1/C) sum_i W2_ik**2
        layer1 = scale * ((h1 * readout) @ h2.T) * overlap
        return {"W1": np.asarray(layer1), "W2": np.asarray(layer2)}
    layer1 = scale * jnp.einsum("ik,jk,ak,bk->abij", w2, w2, h1, h2) * overlap[:, :, None, None]
    eye = jnp.eye(c, dtype=w1.dtype)
    return {"W1": np.asarray(layer1), "W2": np.asarray(layer2[:, :, None, None] * eye)}


def expected_kernels_at_init(p: int, width: int) -> dict:
    """The class-mean layer kernels averaged over the N(0, 1) initialisation, on all p**2 inputs.

    With ``delta_a = [a == a']`` and ``delta_b = [b == b']`` (and ``h_k(a, b) = (u_k[a] + v_k[b]) / sqrt(2p)``,
    ``u, v`` independent N(0, 1)), ``E[h h'] = (delta_a + delta_b) / (2p)``, ``x . x' = delta_a + delta_b``,
    ``E[(1/C) sum_i W2_ik**2] = 1`` and Isserlis' theorem give

        E K1(x, x') = (delta_a + delta_b)**2 / (n p**2)
        E K2(x, x') = (1 + (delta_a + delta_b) / 2 + delta_a delta_b) / (n p**2).

    At large width the kernels concentrate on these (fluctuations ~ 1/sqrt(n) relative).

    Returns:
        ``{"W1": (p**2, p**2), "W2": (p**2, p**2)}`` in the row-major input order of ``make_data``.
    """
    if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 2:
        raise ValueError(f"p must be an integer >= 2; got {p!r}")
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 1:
        raise ValueError(f"width must be a positive integer; got {width!r}")
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    a, b = a.ravel(), b.ravel()
    da = (a[:, None] == a[None, :]).astype(np.float64)
    db = (b[:, None] == b[None, :]).astype(np.float64)
    norm = width * p**2
    return {"W1": (da + db) ** 2 / norm, "W2": (1.0 + (da + db) / 2 + da * db) / norm}
