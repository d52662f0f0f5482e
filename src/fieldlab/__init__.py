"""fieldlab: neural fields as data.

Turn signals into neural fields with the field zoo, render and edit them, and (later) turn datasets into
datasets of fields and learn on them.

>>> import fieldlab
>>> signal = fieldlab.load_signal("sample:camera", max_size=64)
>>> config = fieldlab.make_config("siren", in_dim=2, out_dim=1, hidden_dim=64)
>>> result = fieldlab.fit(signal, config, fieldlab.FitConfig(steps=100, device="cpu"))
"""

__version__ = "0.1.0"

from fieldlab import _deadline  # noqa: F401  first: its clock (`_deadline.IMPORTED`) starts before torch's import
from fieldlab._errors import UserError
from fieldlab.edit import render
from fieldlab.fields import FieldStack, create_field, list_fields, make_config, register_field
from fieldlab.fit import FitConfig, Fitter, fit
from fieldlab.signals import Signal, load_signal
from fieldlab.store import load_field

__all__ = [
    "FieldStack", "FitConfig", "Fitter", "Signal", "UserError", "__version__", "create_field", "fit",
    "list_fields", "load_field", "load_signal", "make_config", "register_field", "render",
]
