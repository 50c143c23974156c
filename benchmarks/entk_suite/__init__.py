"""The eNTK benchmark suite (``make bench``; driver: ``benchmarks/bench_entk.py``).

Modules: ``common`` (timing, memory, the child-process protocol; numpy and the standard library
only, so that the peer environment can import it), ``workloads`` (models, inputs and
independent reference results, on the book's side), ``impls`` (the implementations of
``helpers`` and the baselines), ``child`` (one implementation on one workload, in its own
process), ``peer_nt`` (neural-tangents, run by the peer environment), ``scaleout`` (the largest
problem and the multi-device run), ``report`` (JSON -> Markdown table and plot).

Nothing here imports ``helpers`` at package import: ``peer_nt`` runs under an older JAX.
"""
