"""`fieldlab view PATH`: a field DIR, a field store or a training run, served as a local web page."""

from __future__ import annotations

from pathlib import Path

import typer

from fieldlab.cli._dataclass_options import config_command, options_of
from fieldlab.cli.main import app
from fieldlab.view.options import ViewConfig


@app.command("view")
@config_command(options_of(ViewConfig), positional={"path": "PATH"})
def view_command(
    path: Path = typer.Argument(..., help="A field DIR, a field store or a training run folder."),
    options: dict = None,
) -> None:
    """Look at a field (deep zoom, original and error), a store (thumbnails, PSNR) or a run (curves, eval
    heat map) in a browser; serves until Ctrl-C and writes nothing."""
    from fieldlab.fit import resolve_device
    from fieldlab.view.server import Server

    config = ViewConfig(**{k: v for k, v in options.items() if k != "path"})
    server = Server(Path(options["path"]), host=config.host, port=config.port, device=str(resolve_device(config.device)))
    print(f"fieldlab view of the {server.target.kind} {server.target.path}: {server.url}  (Ctrl-C stops)", flush=True)
    server.run()
