"""Helpers for the executable book on the empirical neural tangent kernel.

One module per mathematical object: ``ntk`` (the eNTK, its collapses, operator, spectra),
``models`` (small models shared by the chapters), and one module per chapter topic.
"""

__version__ = "0.1.0"
