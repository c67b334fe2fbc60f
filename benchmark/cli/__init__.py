"""The ``layerfuse`` command: ``main`` is the console script and ``python -m benchmark`` (see ``benchmark.cli.app``)."""

from benchmark.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
