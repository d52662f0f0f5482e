"""fieldlab: neural fields as data.

Turn signals into neural fields with the field zoo, render and edit them, and (later) turn datasets into
datasets of fields and learn on them.

>>> import fieldlab
>>> signal = fieldlab.load_signal("sample:camera", max_size=64)
>>> config = fieldlab.make_config("siren", in_dim=2, out_dim=1, hidden_dim=64)
>>> result = fieldlab.fit(signal, config, fieldlab.FitConfig(steps=100, device="cpu"))
"""

__version__ = "0.1.0"

import os as _os

# torch backs its CPU tensors of 2 MiB and more with transparent huge pages where the kernel grants them on request
# (THP "madvise", the default of Debian and Ubuntu): a new large tensor then faults its memory in 2 MiB at a time
# rather than 4 KiB. torch reads the variable at its first allocation, so it is set before torch is imported (a
# value already set is kept; 0 turns it off). fit-dataset of 16 photos of 512² on 2 cores: 110.5 → 66.3 s, the same
# peak memory (BENCHMARKS.md, "Huge pages for large CPU tensors").
_os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

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
