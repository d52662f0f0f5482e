"""The `fieldlab` command line."""

from fieldlab.cli.main import app, main

__all__ = ["app", "main"]
