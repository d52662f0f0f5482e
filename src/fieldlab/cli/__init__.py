"""The `fieldlab` command line. `app` holds main.py's own commands; `main` imports the module of the command it
runs, and `register_all()` every module, for a caller that wants the whole `app`."""

from fieldlab.cli._command_modules import register_all
from fieldlab.cli.main import app, main

__all__ = ["app", "main", "register_all"]
