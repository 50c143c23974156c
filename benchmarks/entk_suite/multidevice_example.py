"""The eNTK data-parallel over every device: several CPU devices, a GPU machine, or several hosts.

The same lines run everywhere; only the devices differ:

* here, four CPU devices forced on one host (``tests/test_sharding.py`` checks the same calls so):
      XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m benchmarks.entk_suite.multidevice_example
* a GPU machine: install ``jax[cuda12]`` and run it as it is (``jax.devices()`` lists the GPUs);
* several hosts: start one process per host with ``ENTK_COORDINATOR=host0:port``,
  ``ENTK_NUM_PROCESSES`` and ``ENTK_PROCESS_ID`` set; ``jax.distributed.initialize`` joins them
  and ``jax.devices()`` then lists every device of every host.

It prints the largest difference between the sharded and the one-device results (the
examples are sharded over the mesh, the parameters replicated: only the order of sums differs).
``ENTK_P`` and ``ENTK_WIDTH`` set the size of the modular-addition model (default 13 and 128).
"""

import os

import jax
import numpy as np
from jax.sharding import Mesh

if "ENTK_COORDINATOR" in os.environ:  # several hosts: one process per host
    if os.environ.get("JAX_PLATFORMS") == "cpu":  # CPU hosts exchange arrays through gloo
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=os.environ["ENTK_COORDINATOR"],
        num_processes=int(os.environ["ENTK_NUM_PROCESSES"]),
        process_id=int(os.environ["ENTK_PROCESS_ID"]),
    )

from helpers import modular, ntk  # noqa: E402

p, width = int(os.environ.get("ENTK_P", "13")), int(os.environ.get("ENTK_WIDTH", "128"))
params = modular.init_params(jax.random.PRNGKey(0), p, width)
x = modular.make_data(p).x  # all p^2 pairs
mesh = Mesh(np.array(jax.devices()), ("data",))  # one axis over every device

# dense kernels: examples sharded over the mesh (padded to a multiple of the device count)
K = ntk.class_mean_entk(modular.apply, params, x, mesh=mesh)
layers = ntk.layerwise_entk(modular.apply, params, x, collapse="class_mean", mesh=mesh)

# the matrix-free operator: N must be a multiple of the device count
n = x.shape[0] // len(jax.devices()) * len(jax.devices())
op = ntk.entk_operator(modular.apply, params, x[:n], mesh=mesh)
lam, vecs, info = ntk.top_eigenpairs(op, 10, return_info=True)

# the same on one device, for comparison
K1 = ntk.class_mean_entk(modular.apply, params, x)
lam1 = ntk.top_eigenpairs(ntk.entk_operator(modular.apply, params, x[:n]), 10)[0]
print(f"{len(jax.devices())} devices; class-mean kernel {K.shape}; operator of dimension {op.shape[0]}: "
      f"{info['products']} products, residual {info['residuals'].max():.1e}")
print("max relative difference, kernel:", float(np.abs(K - K1).max() / np.abs(K1).max()))
print("max relative difference, layers:", float(max(np.abs(layers[k] - ntk.layerwise_entk(
    modular.apply, params, x, collapse="class_mean")[k]).max() / np.abs(K1).max() for k in layers)))
print("max relative difference, eigenvalues:", float(np.abs(lam - lam1).max() / lam1[0]))
