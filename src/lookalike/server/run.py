"""`lookalike serve`: load the collection once, then serve the page and the API with uvicorn."""
from __future__ import annotations

import secrets
import socket
import threading
import time
from dataclasses import dataclass

import uvicorn

from lookalike.server.api import create_app
from lookalike.server.service import SearchService, ServerConfig

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def serve(config: ServerConfig, host: str = "127.0.0.1", port: int = 8000, share: bool = False) -> None:
    started = time.perf_counter()
    service = SearchService(config)
    loaded = time.perf_counter() - started
    app = create_app(config, service)
    print(
        f"lookalike: {service.count():,} images, encoder {service.encoder.name}; model and index loaded in"
        f" {loaded:.1f}s, page and API ready in {time.perf_counter() - started:.1f}s"
    )
    if host not in LOCAL_HOSTS and not config.token:
        print("lookalike: warning: serving beyond this machine without --token; anyone who can reach it can use it")
    suffix = f"/?token={config.token}" if config.token else "/"
    print(f"lookalike: page http://{host}:{port}{suffix}  API http://{host}:{port}/api/docs")
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    if share:
        threading.Thread(target=_open_share_link, args=(server, host, port, config.token), daemon=True).start()
    server.run()


def _open_share_link(server: uvicorn.Server, host: str, port: int, token: str | None) -> None:
    """Gradio's public share link (a tunnel to this server), opened once the server is up."""
    from gradio import networking

    while not server.started:
        time.sleep(0.1)
    try:
        url = networking.setup_tunnel(
            local_host=host, local_port=port, share_token=secrets.token_urlsafe(32),
            share_server_address=None, share_server_tls_certificate=None,
        )
    except Exception as e:  # no internet, blocked download of Gradio's tunnel client, ...
        print(f"lookalike: could not open a share link ({e}); serving locally only")
        return
    suffix = f"/?token={token}" if token else "/"
    print(f"lookalike: public link {url.replace('http://', 'https://', 1)}{suffix}")
    if not token:
        print("lookalike: warning: the public link has no --token; anyone with the link can use the server")


@dataclass
class BackgroundServer:
    """A server running in a thread of this process (tests, notebooks); `stop()` shuts it down."""

    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def start_background(config: ServerConfig, host: str = "127.0.0.1", port: int = 0, ui: bool = True) -> BackgroundServer:
    """Load the collection, then serve it from a daemon thread on `port` (0: a free one); returns once it answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    app = create_app(config, with_ui=ui)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="lookalike-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    return BackgroundServer(f"http://{host}:{sock.getsockname()[1]}", server, thread)
