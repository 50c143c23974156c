"""Command-line tools that run the book's chapters: ``make chapter``, ``make variants``, ``make pages``.

They are run from the repository root as ``python -m tools.<name>``; they are not part of the
installed ``helpers`` package.
"""
