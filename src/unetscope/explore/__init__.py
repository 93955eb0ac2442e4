"""``unetscope explore``: a browser explorer over run folders (read-only; 127.0.0.1 by default).

``explore(dirs)`` serves the page until interrupted; ``explore(dirs, html=FILE)`` writes it as one
self-contained file instead; ``explore(dirs, block=False)`` returns the running ``Explorer``.
"""

from __future__ import annotations

import ipaddress
import threading
from dataclasses import dataclass

from .data import ExploreError, RunFolder, open_folders
from .export import export_html
from .server import LOOPBACK_NAMES, hosts_text, make_server, serve_in_thread

__all__ = ["explore", "Explorer", "ExploreError", "RunFolder", "open_folders", "export_html"]

DEFAULT_PORT = 8765


def first_line(n_folders: int, runs: int, url: str, allowed, bound: str) -> str:
    """What the explorer prints first: where it serves, and, bound to an address that is not loopback
    (0.0.0.0 among them), the Host names it answers (any other gets a 403)."""
    line = f"unetscope explore: {n_folders} folder{'s' if n_folders > 1 else ''}, {runs} runs at {url} (read-only; Ctrl-C stops)"
    try:
        loopback = ipaddress.ip_address(bound).is_loopback
    except ValueError:
        loopback = False
    if not loopback or any(n not in LOOPBACK_NAMES and n != f"[{bound}]" and n != bound for n, _ in allowed):
        line += f"; it answers only Host {hosts_text(allowed)} (--allow-host NAME adds one)"
    return line


@dataclass
class Explorer:
    """A running explorer: its address, and ``close()`` to stop it."""

    url: str
    server: object
    thread: threading.Thread

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def explore(dirs, *, port: int = DEFAULT_PORT, host: str = "127.0.0.1", browser: bool = True, html=None,
            block: bool = True, allow_hosts=(), log=print):
    """Explore run folders: ``html`` set, write one file and return what it holds; else serve them on
    ``host:port`` (0: a free port), open a browser unless ``browser=False``, and serve until
    interrupted (``block=False``: return the running ``Explorer`` at once). Requests whose Host header
    names anything but the bound address, the loopback names (and, bound to another address, this
    machine's names) or an ``allow_hosts`` entry (``NAME`` or ``NAME:PORT``, ``--allow-host``) get a 403."""
    if isinstance(dirs, (str, bytes)) or hasattr(dirs, "__fspath__"):
        dirs = [dirs]
    folders = open_folders(list(dirs))
    if html is not None:
        res = export_html(folders, html)
        log(f"wrote {res['path']} ({res['bytes'] / 1e6:.1f} MB: {res['runs']} runs, {res['images']} images); "
            "open it in a browser, no server needed")
        return res
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ExploreError(f"--port must be an integer in 0..65535, got {port!r}")
    srv = make_server(folders, host, port, allow_hosts=allow_hosts or ())
    h, p = srv.server_address[:2]
    url = f"http://{'[' + h + ']' if ':' in h else h}:{p}/"
    th = serve_in_thread(srv)
    ex = Explorer(url, srv, th)
    runs = sum(len(f._runs) for f in folders)
    log(first_line(len(folders), runs, url, srv.allowed, h))
    if browser:
        import webbrowser

        try:
            webbrowser.open(url)
        except Exception:  # no browser here: the address is printed
            pass
    if not block:
        return ex
    try:
        th.join()
    except KeyboardInterrupt:
        pass
    finally:
        ex.close()
    return ex
