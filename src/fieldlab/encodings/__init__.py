"""Input encodings; each reports its `out_dim` so the network after it is sized from it."""

from fieldlab.encodings.fourier import GaussianFourierFeatures, PositionalEncoding
from fieldlab.encodings.hashgrid import HashGridEncoding

__all__ = ["GaussianFourierFeatures", "HashGridEncoding", "PositionalEncoding"]
