"""`fieldlab view`: a field DIR, a field store or a training run in a browser (gradio, the `view` extra,
imported only by `view.server`). Image fields are seen through deep-zoom tiles rendered on demand
(`fieldlab.view.tiles`); the package's import stays light, as the CLI imports it for its options."""

from fieldlab.view.options import ViewConfig

__all__ = ["ViewConfig"]
