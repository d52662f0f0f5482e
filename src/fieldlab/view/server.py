"""Serving the view: the port is checked before anything starts, and a test can run the server in a thread."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

from fieldlab._errors import UserError, missing_extra
from fieldlab._validate import bounded_int

FIRST_PORT = 7860


def check_port(host: str, port: int) -> None:
    """Refuse a port that another program holds (or that this host cannot have), in one line."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        # as uvicorn binds: a port a closed server left in TIME_WAIT is free, one that a program listens on is not
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise UserError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None


def free_port(host: str) -> int:
    """The first free port from FIRST_PORT (gradio's habit), so the URL is the one people expect."""
    for port in range(FIRST_PORT, FIRST_PORT + 100):
        try:
            check_port(host, port)
            return port
        except UserError:
            continue
    raise UserError(f"no free port on {host} between {FIRST_PORT} and {FIRST_PORT + 99}; give one with --port")


def require_extra() -> None:
    # gradio asks the network for nothing when these are set (analytics, a version check)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import fastapi  # noqa: F401
        import gradio  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise missing_extra("gradio", "view") from None


class Server:
    """The view of `path` served on host:port, run in the caller's thread (`run`) or a background one
    (`start`, `close`)."""

    def __init__(self, path: Path, *, host: str = "127.0.0.1", port: int | None = None, device: str = "cpu"):
        from fieldlab.view._target import find_target

        target = find_target(Path(path))
        port = free_port(host) if port is None else bounded_int(port, "--port", 1, 65535)
        check_port(host, port)
        require_extra()
        import uvicorn

        from fieldlab.view.app import build_app

        self.app, self.sources = build_app(target, device)
        self.target, self.host, self.port = target, host, port
        self.server = uvicorn.Server(uvicorn.Config(self.app, host=host, port=port, log_level="warning",
                                                    access_log=False))
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def run(self) -> None:
        self.server.run()

    def start(self, timeout: float = 30.0) -> Server:
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        end = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > end:
                raise RuntimeError(f"the view server did not start on {self.url}")
            time.sleep(0.02)
        return self

    def close(self) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=10)
