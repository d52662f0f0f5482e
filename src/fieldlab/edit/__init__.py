"""Editing stored fields: render (later: crop, extend)."""

from fieldlab.edit.render import parse_region, render, render_grid, rendered_info

__all__ = ["parse_region", "render", "render_grid", "rendered_info"]
