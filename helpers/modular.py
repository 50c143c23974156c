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

__all__ = ["ModularData", "make_data", "init_params", "apply", "mse_loss", "accuracy", "train_model", "grokking_epoch"]


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
    keep_params: bool = True,
):
    """Full-batch AdamW on the training split; returns ``(params, History)``.

    The history records train/test loss and accuracy at every ``record_every`` epochs (one
    epoch = one full-batch step) and, if ``keep_params``, the parameters there.
    """
    xtr, ytr = jnp.asarray(data.x[data.train_idx]), jnp.asarray(data.y[data.train_idx])
    xte, yte = jnp.asarray(data.x[data.test_idx]), jnp.asarray(data.y[data.test_idx])
    params = init_params(jax.random.PRNGKey(seed), data.p, width)
    metrics = {
        "train_acc": lambda q: accuracy(q, xtr, ytr),
        "test_acc": lambda q: accuracy(q, xte, yte),
        "test_loss": lambda q: mse_loss(q, xte, yte),
    }
    return _train.train(
        lambda q: mse_loss(q, xtr, ytr),
        params,
        optax.adamw(lr, weight_decay=weight_decay),
        epochs,
        record_every=record_every,
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
