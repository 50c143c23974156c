"""The helpers install from their wheel into a clean virtual environment and compute a kernel.

Builds the wheel with the pinned ``build`` and ``setuptools`` (no network: ``--no-isolation``),
checks its metadata (licence, the runtime dependencies and nothing else), installs it into a
fresh venv with its dependencies resolved by pip from the declared ranges (pinned to the lock
file's versions so pip reuses its cache), and computes an eNTK there, outside the repository,
against a reference computed in this process.
"""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

SNIPPET = r"""
import json, sys
import jax, jax.numpy as jnp
import helpers
from helpers import ntk
assert "site-packages" in helpers.__file__, helpers.__file__
def f(p, x):
    return jnp.tanh(x @ p["w1"]) @ p["w2"]
p = {"w1": jnp.linspace(-1, 1, 12).reshape(3, 4), "w2": jnp.linspace(0.5, -0.5, 8).reshape(4, 2)}
x = jnp.linspace(-2, 2, 15).reshape(5, 3)
k = ntk.class_mean_entk(f, p, x)
print(json.dumps(k.tolist()))
"""


def _reference():
    import jax
    import jax.numpy as jnp

    def f(p, x):
        return jnp.tanh(x @ p["w1"]) @ p["w2"]

    p = {"w1": jnp.linspace(-1, 1, 12).reshape(3, 4), "w2": jnp.linspace(0.5, -0.5, 8).reshape(4, 2)}
    x = jnp.linspace(-2, 2, 15).reshape(5, 3)
    jac = jax.vmap(jax.jacrev(lambda q, xi: f(q, xi[None])[0]), in_axes=(None, 0))(p, x)
    flat = np.concatenate([np.asarray(a).reshape(5, 2, -1) for a in jax.tree_util.tree_leaves(jac)], axis=-1)
    return np.einsum("aip,bip->ab", flat, flat) / 2


def _clean_env():
    # nothing of this checkout may leak into the clean venv (PYTHONPATH, a virtualenv's paths)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["JAX_PLATFORMS"] = "cpu"
    return env


def test_wheel_installs_and_computes_a_kernel(tmp_path):
    # build from a copy of the package sources, so the build leaves nothing in the checkout
    src = tmp_path / "src"
    src.mkdir()
    shutil.copytree(ROOT / "helpers", src / "helpers", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(src)],
        check=True,
        capture_output=True,
        cwd=tmp_path,
        env=_clean_env(),
    )
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta = zf.read(next(n for n in names if n.endswith("METADATA"))).decode()
    modules = sorted(p.name for p in (ROOT / "helpers").glob("*.py"))
    assert sorted(Path(n).name for n in names if n.startswith("helpers/")) == modules
    assert "License-Expression: MIT" in meta
    requires = sorted(line.split(":", 1)[1].strip().split(">")[0].split("=")[0] for line in meta.splitlines() if line.startswith("Requires-Dist:"))
    assert requires == ["jax", "numpy", "optax", "scipy"], requires

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=_clean_env())
    py = venv / "bin" / "python"
    lock = ROOT / "requirements.lock"
    install = subprocess.run(
        [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel), "-c", str(lock)],
        capture_output=True,
        text=True,
        env=_clean_env(),
    )
    assert install.returncode == 0, install.stderr[-3000:]
    check = subprocess.run([str(py), "-m", "pip", "check"], capture_output=True, text=True, env=_clean_env())
    assert check.returncode == 0, check.stdout
    run = subprocess.run(
        [str(py), "-c", SNIPPET], capture_output=True, text=True, cwd=tmp_path, env=_clean_env()
    )
    assert run.returncode == 0, run.stderr[-3000:]
    kernel = np.array(json.loads(run.stdout.strip().splitlines()[-1]))
    np.testing.assert_allclose(kernel, _reference(), rtol=1e-5, atol=1e-6)
