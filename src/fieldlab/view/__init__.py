"""`fieldlab view`: a field DIR, a field store or a training run in a browser (gradio, the `view` extra,
imported only here). Image fields are seen through deep-zoom tiles rendered on demand (`view.tiles`)."""

from fieldlab.view.options import ViewConfig
from fieldlab.view.tiles import TILE, TileSpec, native_level, tile_spec

__all__ = ["TILE", "TileSpec", "ViewConfig", "native_level", "tile_spec"]
