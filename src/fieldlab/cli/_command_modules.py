"""Imports the modules whose commands live outside `main.py`; each one registers on `app` when imported."""

# One import per command module, e.g. `from fieldlab.cli import edit_commands  # noqa: F401`.
from fieldlab.cli import edit_commands  # noqa: F401,E402
from fieldlab.cli import dataset_commands  # noqa: F401,E402
from fieldlab.cli import learn_commands  # noqa: F401,E402
from fieldlab.cli import capability_commands  # noqa: F401,E402
from fieldlab.cli import view_commands  # noqa: F401,E402
