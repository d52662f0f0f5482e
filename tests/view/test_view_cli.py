"""fieldlab view's refusals (one line, exit 2, nothing served) and the tile geometry; no browser needed."""

import socket
import sys

import pytest

from fieldlab.cli.main import main
from fieldlab.view.tiles import TILE, native_level, tile_spec


def refused(capsys, args) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in args])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("fieldlab: error:"), err
    return err


def test_a_path_that_is_no_field_store_or_run_is_refused(capsys, tmp_path):
    (tmp_path / "photo.png").write_bytes(b"not a field")
    assert "is no field DIR" in refused(capsys, ["view", tmp_path])
    assert "does not exist" in refused(capsys, ["view", tmp_path / "missing"])


def test_a_port_in_use_is_refused_before_anything_starts(capsys, image_field):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert f"cannot listen on 127.0.0.1:{port}" in refused(capsys, ["view", image_field, "--port", port])


def test_a_missing_view_extra_names_it(capsys, image_field, monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio raises ImportError
    assert "pip install 'fieldlab[view]'" in refused(capsys, ["view", image_field])


def test_tiles_cover_the_image_and_zoom_past_its_resolution():
    shape = (1000, 600)
    native = native_level(shape)
    assert TILE * 2 ** (native - 1) < 1000 <= TILE * 2**native  # the native level holds the image, one below not
    scale = 2.0**-native
    assert tile_spec(shape, 0, 0, 0).size == (round(1000 * scale), round(600 * scale))  # the whole image in a tile
    last_y, last_x = (1000 - 1) // TILE, (600 - 1) // TILE
    spec = tile_spec(shape, native, last_x, last_y)  # one sample per pixel; the last row and column are clipped
    assert spec.region == ((last_y * TILE, 1000.0), (last_x * TILE, 600.0))
    assert spec.size == (1000 - last_y * TILE, 600 - last_x * TILE)
    deep = tile_spec(shape, native + 3, 0, 0)  # 8 pixels per sample
    assert deep.region == ((0.0, TILE / 8), (0.0, TILE / 8)) and deep.size == (TILE, TILE)
    assert deep.cli_region == f"0:{TILE // 8},0:{TILE // 8}"


def test_a_tile_outside_the_image_is_a_user_error():
    from fieldlab._errors import UserError

    native = native_level((1000, 600))
    columns = -(-600 // TILE)  # at the native level
    with pytest.raises(UserError, match=f"x must be between 0 and {columns - 1}"):
        tile_spec((1000, 600), native, columns, 0)
    with pytest.raises(UserError, match="z must be"):
        tile_spec((1000, 600), native + 4, 0, 0)


def test_view_takes_its_options_from_a_config_file(capsys, image_field, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (tmp_path / "view.json").write_text(f'{{"port": {port}}}')
        assert f"127.0.0.1:{port}" in refused(capsys, ["view", image_field, "--config", tmp_path / "view.json"])


def test_the_tile_route_answers_a_tile_outside_the_image_with_404(image_field, serve):
    import urllib.error
    import urllib.request

    server = serve(image_field)
    with urllib.request.urlopen(server.url + "fieldlab/tile?src=field&z=3&x=0&y=0") as reply:
        assert reply.headers["content-type"] == "image/png"
    for query in ("z=3&x=9&y=0", "z=9&x=0&y=0", "z=1&x=0&y=0&layer=nothing"):
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(server.url + "fieldlab/tile?src=field&" + query)
        assert error.value.code == 404
