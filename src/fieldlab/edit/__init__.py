"""Editing stored fields: render, crop, extend."""

from fieldlab.edit.crop import crop_field, parse_box, parse_parts, write_cropped
from fieldlab.edit.extend import extend_field, write_extended
from fieldlab.edit.render import frame_info, parse_region, render, render_grid, rendered_info

__all__ = ["crop_field", "extend_field", "frame_info", "parse_box", "parse_parts", "parse_region", "render",
           "render_grid", "rendered_info", "write_cropped", "write_extended"]
