"""fieldlab view in a real headless Chromium: a field's deep zoom, a store's grid, a run's curves."""

import re
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli

pytestmark = pytest.mark.browser


def png_pixels(data: bytes) -> np.ndarray:
    import io

    return np.asarray(Image.open(io.BytesIO(data)))


def test_a_zoomed_tile_of_a_field_equals_render_of_its_region(image_field, serve, page, tmp_path):
    from fieldlab.view.tiles import tile_spec

    server = serve(image_field)
    tiles = []
    page.on("response", lambda r: "/fieldlab/tile" in r.url and "layer=field" in r.url and tiles.append(r))
    page.goto(server.url)
    page.wait_for_selector(".fl-zoom .fl-main")
    page.wait_for_function("document.querySelector('.fl-zoom') && document.querySelector('.fl-status').textContent.startsWith('level')")
    for _ in range(2):  # the fitted view of 40 px on 400 is 10x; zoom out to 2.5x, level 2 (4x)
        page.click(".fl-out")
    page.wait_for_function("document.querySelector('.fl-status').textContent.startsWith('level 2')")

    def level_two():
        return [r for r in tiles if parse_qs(urlparse(r.url).query)["z"] == ["2"]]

    for _ in range(100):  # level 2's tiles come after its status line: 300 ms on a quiet machine, more on a busy one
        page.wait_for_timeout(100)
        if level_two():
            break
    page.screenshot(path=tmp_path / "field.png", full_page=True)
    assert not page.errors, page.errors
    zoomed = level_two()
    assert zoomed, [r.url for r in tiles]
    query = {k: v[0] for k, v in parse_qs(urlparse(zoomed[-1].url).query).items()}
    spec = tile_spec((40, 40), query["z"], query["x"], query["y"])
    (r0, r1), _ = spec.region
    assert spec.size[0] / (r1 - r0) == 4  # past the signal's own resolution: 4 pixels per sample
    run_cli(["render", image_field, "--out", tmp_path / "tile.png", "--region", spec.cli_region,
             "--size", "x".join(map(str, spec.size)), "--device", "cpu"])
    # Exactly equal: the tile is the same render, decoded and written by the same PNG writer.
    assert np.array_equal(png_pixels(zoomed[-1].body()), np.asarray(Image.open(tmp_path / "tile.png")))


def captions(page) -> list[tuple[int, float]]:
    text = page.inner_text("#grid")
    return [(int(row), float(db)) for row, db in re.findall(r"row (\d+) · ([\d.]+) dB", text)]


def test_the_store_grid_pages_sorts_and_clicks_through(image_store, serve, page, tmp_path):
    server = serve(image_store)
    page.goto(server.url)
    page.wait_for_function("document.querySelectorAll('#grid img').length == 24")
    first = captions(page)
    assert [row for row, _ in first] == list(range(24))
    page.click("#next")
    page.wait_for_function("document.querySelectorAll('#grid img').length == 6")
    assert [row for row, _ in captions(page)] == list(range(24, 30))
    page.click("#sort input")
    page.get_by_role("option", name="PSNR, best first").click()
    page.wait_for_function("document.querySelectorAll('#grid img').length == 24")
    page.wait_for_function("document.querySelector('#grid').innerText.includes('49.00 dB')")
    psnrs = [db for _, db in captions(page)]
    assert psnrs == sorted(psnrs, reverse=True) and psnrs[0] == 49.0
    page.locator("#grid img").first.click()
    page.wait_for_function("document.querySelector('#chosen').innerText.includes('49.00 dB')")
    page.wait_for_function("document.querySelector('.fl-status').textContent.startsWith('level')")
    page.screenshot(path=tmp_path / "store.png", full_page=True)
    assert not page.errors, page.errors


def test_the_run_page_shows_its_curve_and_heat_map(learn_run, serve, page, tmp_path):
    server = serve(learn_run)
    page.goto(server.url)
    page.wait_for_selector("#heatmap img, #heatmap svg, #heatmap canvas", timeout=20000)
    page.wait_for_selector("#curve")
    page.screenshot(path=tmp_path / "run.png", full_page=True)
    assert not page.errors, page.errors


@pytest.mark.parametrize("kind, selector", [("audio", "#spectrogram"), ("video", "#video-frame img"),
                                            ("volume", "#volume-column img"), ("mesh", "#model3d canvas")])
def test_the_page_of_each_modality_loads_without_console_errors(kind, selector, modality_fields, serve, page,
                                                                 tmp_path):
    server = serve(modality_fields[kind])
    page.goto(server.url)
    page.wait_for_selector(selector, timeout=20000)
    page.wait_for_timeout(500)
    page.screenshot(path=tmp_path / f"{kind}.png", full_page=True)
    assert not page.errors, page.errors


def test_the_partitions_of_a_local_global_field_are_drawn_over_it(local_global_field, serve, page, tmp_path):
    server = serve(local_global_field)
    page.goto(server.url)
    page.wait_for_selector(".fl-overlay:visible")
    page.select_option(".fl-overlay", "partitions")
    page.wait_for_function("document.querySelector('.fl-zoom').dataset.overlay == '4'")
    page.mouse.move(*(lambda b: (b["x"] + 10, b["y"] + 10))(page.locator(".fl-main").bounding_box()))
    page.wait_for_function("document.querySelector('.fl-status').textContent.startsWith('block 0: ')")
    page.screenshot(path=tmp_path / "partitions.png", full_page=True)
    assert not page.errors, page.errors
