"""Data-parallel kernels over a jax.sharding.Mesh equal the single-device kernels.

Runs in a subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (four CPU
devices; the flag must be set before JAX starts, hence the subprocess). Batches of sizes that
are not multiples of 4 exercise the padding; float64 throughout.
"""

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent

SCRIPT = r"""
import jax, numpy as np
jax.config.update("jax_enable_x64", True)
from jax.sharding import Mesh
import zoo
from helpers import ntk
assert len(jax.devices()) == 4, jax.devices()
mesh = Mesh(np.array(jax.devices()).reshape(2, 2), ("a", "b"))
def rel(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / max(np.abs(np.asarray(b)).max(), 1e-300))
worst = 0.0
for name in ["mlp_bias", "attention", "conv1d", "embedding_lookup", "modular_addition", "low_rank"]:
    f, params, x1, x2 = zoo.ZOO[name](3)
    for method in ["auto", "generic"]:
        worst = max(worst, rel(ntk.entk(f, params, x1, x2, method=method, mesh=mesh), ntk.entk(f, params, x1, x2, method=method)))
        worst = max(worst, rel(ntk.class_mean_entk(f, params, x1, method=method, mesh=mesh), ntk.class_mean_entk(f, params, x1, method=method)))
        a = ntk.layerwise_entk(f, params, x1, x2, groups=jax.tree_util.tree_map(lambda _: "all", params), collapse="class_mean", method=method, mesh=mesh)
        b = ntk.layerwise_entk(f, params, x1, x2, groups=jax.tree_util.tree_map(lambda _: "all", params), collapse="class_mean", method=method)
        worst = max(worst, rel(a["all"], b["all"]))
    worst = max(worst, rel(ntk.class_mean_entk(f, params, x1, method="generic", block_bytes=4096, mesh=mesh), ntk.class_mean_entk(f, params, x1, method="generic")))
    x4 = np.concatenate([np.asarray(x1), np.asarray(x2)], axis=0)[:4]
    v = np.random.default_rng(0).standard_normal((ntk.entk_operator(f, params, x4).shape[0], 2))
    worst = max(worst, rel(ntk.entk_operator(f, params, x4, mesh=mesh) @ v, ntk.entk_operator(f, params, x4) @ v))
print("WORST", worst)
"""


def test_sharded_kernels_equal_single_device():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(TESTS.parent), env.get("PYTHONPATH", "")])
    run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, cwd=TESTS)
    assert run.returncode == 0, run.stderr[-4000:]
    worst = float(run.stdout.strip().splitlines()[-1].split()[1])
    assert worst < 1e-10, worst  # float64 rounding: sharding changes only the order of sums
