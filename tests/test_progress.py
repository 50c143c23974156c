"""helpers.progress: the switch (HELPERS_PROGRESS, Jupyter-server kernels), bars that do not
change results, and silence by default."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from helpers import progress, train


@pytest.mark.parametrize(
    "value, expected",
    [("0", "off"), ("", "off"), ("off", "off"), ("1", "auto"), ("auto", "auto"), ("TRUE", "auto"), ("text", "text")],
)
def test_mode_from_the_environment(monkeypatch, value, expected):
    monkeypatch.setenv("HELPERS_PROGRESS", value)
    monkeypatch.setenv("JPY_SESSION_NAME", "a.ipynb")  # the variable wins over the detection
    assert progress.mode() == expected


def test_unset_is_off_except_in_a_kernel_of_a_jupyter_server(monkeypatch):
    monkeypatch.delenv("HELPERS_PROGRESS", raising=False)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    assert progress.mode() == "off" and not progress.enabled()
    monkeypatch.setenv("JPY_SESSION_NAME", "/work/notebooks/06_modular_addition.md")
    assert progress.mode() == "auto" and progress.enabled()


def test_a_bad_setting_names_the_variable(monkeypatch):
    monkeypatch.setenv("HELPERS_PROGRESS", "loud")
    with pytest.raises(ValueError, match="HELPERS_PROGRESS"):
        progress.enabled()


def test_track_is_the_iterable_itself_when_off(monkeypatch, capsys):
    monkeypatch.setenv("HELPERS_PROGRESS", "0")
    items = [3, 1, 2]
    assert progress.track(items, "x") is items
    with progress.bar(10, "y") as b:
        b.update(10)
    assert capsys.readouterr() == ("", "")


def test_track_shows_a_text_bar_and_yields_the_same_items(monkeypatch, capsys):
    monkeypatch.setenv("HELPERS_PROGRESS", "text")
    assert list(progress.track((i * i for i in range(5)), "squares", total=5)) == [0, 1, 4, 9, 16]
    err = capsys.readouterr().err
    assert "squares" in err and "5/5" in err


def _problem():
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, (40, 3))
    y = jnp.sin(x.sum(1))
    params = {"w": 0.5 * jax.random.normal(jax.random.PRNGKey(1), (3, 16)), "v": jnp.zeros(16)}
    return (lambda p: jnp.mean((jnp.tanh(x @ p["w"]) @ p["v"] - y) ** 2)), params


def test_train_with_a_bar_gives_bitwise_the_same_result(monkeypatch, capsys):
    monkeypatch.setenv("HELPERS_PROGRESS", "text")
    loss, params = _problem()
    a, ha = train.train(loss, params, optax.adam(1e-2), 537, record_at=[100, 250], progress=False)
    assert capsys.readouterr().err == ""
    b, hb = train.train(loss, params, optax.adam(1e-2), 537, record_at=[100, 250])  # follows the variable
    assert "train" in capsys.readouterr().err
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]))
    np.testing.assert_array_equal(ha.steps, hb.steps)
    np.testing.assert_array_equal(ha.metrics["loss"], hb.metrics["loss"])
    # and the loss did go down: the run is a real optimisation, not a no-op in both branches
    assert hb.metrics["loss"][-1] < 0.5 * hb.metrics["loss"][0]
