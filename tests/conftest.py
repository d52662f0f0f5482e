import numpy as np
import pytest
import torch

from fieldlab.signals import load_signal


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def camera32():
    """A tiny real image: scikit-image's camera, anti-aliased down to 32×32."""
    return load_signal("sample:camera", max_size=32)


@pytest.fixture(scope="session")
def astronaut32():
    return load_signal("sample:astronaut", max_size=32)
