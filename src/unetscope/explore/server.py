"""The explorer's HTTP server: the page, its assets, JSON endpoints queried on demand, kept images as
PNG and the figures' files, from the given run folders only.

Endpoints (GET; ``f`` is a folder's number, ``run`` a run's name):
``/api/index`` every folder's runs, settings, findings and figure numbers; ``/api/stats?f&run[&cond][&seeds]``
per-variant n, mean and sd; ``/api/variant?f&run&vid[&cond][&seeds][&by]`` a variant's samples, worst
first (``by``: an experiment's own statistic, e.g. feature-change's rel_l1 or cos); ``/api/seed?f&run&seed`` one sample's rows (a trajectory); ``/api/image?f&run&seed&vid`` a
kept image as PNG; ``/files/F/PATH`` a figure's PNG or JSON under folder F. Anything else is a 404.

Every request first shows a Host header the server answers (``allowed_hosts``), or gets a 403 before
anything is read: a page on another name that resolves to this machine (DNS rebinding) reads nothing.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import re
import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

from ..store import canonical
from .data import BASELINE, ExploreError, RunFolder, parse_seeds

__all__ = ["make_server", "serve_in_thread", "index", "page_html", "asset", "ASSETS", "allowed_hosts", "parse_allow_host",
           "host_allowed"]

ASSETS = {"explorer.js": "text/javascript; charset=utf-8", "explorer.css": "text/css; charset=utf-8"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
BARE_PORTS = (80, 443)  # the ports a browser leaves out of the Host header (http's and https's)
_NAME = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*\.?", re.I)


def _host_name(h: str) -> str:
    """An address as a Host header writes it: an IPv6 address in brackets, names in lower case."""
    h = h.strip().lower()
    return f"[{h}]" if ":" in h and not h.startswith("[") else h


def parse_allow_host(value: str, port: int) -> tuple[str, int]:
    """``NAME`` or ``NAME:PORT`` (``--allow-host``): a host name or address, and the port (the server's
    own when not given). ExploreError, in one line, for anything else."""
    v = value.strip() if isinstance(value, str) else value
    if not isinstance(v, str) or not v:
        raise ExploreError(f"--allow-host must be a host name or address, optionally with :PORT; got {value!r}")
    name, p = v, port
    m = re.fullmatch(r"(\[[^\]]*\]|[^:]*):(\d{1,5})", v)  # NAME:PORT or [V6]:PORT; a bare V6 has several colons
    if m:
        name, p = m.group(1), int(m.group(2))
    bare = name[1:-1] if name.startswith("[") and name.endswith("]") else name
    try:
        ok = ipaddress.ip_address(bare).version == 6 or bare == name  # an IPv4 address is not bracketed
    except ValueError:
        ok = ":" not in name and bool(_NAME.fullmatch(name)) and len(name) <= 253
    if not ok or not 1 <= p <= 65535:
        raise ExploreError(f"--allow-host must be a host name or address, optionally with :PORT; got {value!r}")
    return _host_name(bare), p


def allowed_hosts(bound: str, port: int, host: str | None = None, allow=()) -> list[tuple[str, int]]:
    """The Host header values the server at ``bound:port`` answers, as (name, port): the address it
    listens on (and ``host`` as given, if a name), the loopback names, and for a bind that is not
    loopback (0.0.0.0 among them) the machine's own names, then ``allow`` (``--allow-host``)."""
    names = [_host_name(bound)]
    if host and host.strip().lower() != bound.lower():
        try:
            ipaddress.ip_address(host.strip())
        except ValueError:
            names.append(_host_name(host))
    names += LOOPBACK_NAMES
    try:
        loopback = ipaddress.ip_address(bound).is_loopback
    except ValueError:
        loopback = False
    if not loopback:  # the machine's names; its addresses are not known in general (--allow-host adds them)
        for get in (socket.gethostname, socket.getfqdn):
            try:
                names.append(_host_name(get()))
            except OSError:
                pass
    out = []
    for e in [(n, port) for n in names if n] + [parse_allow_host(a, port) for a in allow]:
        if e not in out:
            out.append(e)
    return out


def host_allowed(value: str | None, allowed) -> bool:
    """Whether a request's Host header is one of ``allowed`` (names compared in lower case; without a
    port only where a browser leaves it out)."""
    if value is None:
        return False
    v = value.strip().lower()
    return any(v == f"{n}:{p}" or (p in BARE_PORTS and v == n) for n, p in allowed)


def hosts_text(allowed) -> str:
    return ", ".join(f"{n}:{p}" for n, p in allowed)


def asset(name: str) -> str:
    return resources.files(__package__).joinpath("assets", name).read_text(encoding="utf-8")


def page_html(head: str = "", body_end: str = "") -> str:
    """The page: a shell the script fills in (``head``/``body_end``: what an export inlines)."""
    return asset("index.html").replace("<!--HEAD-->", head).replace("<!--BODY_END-->", body_end)


def index(folders: list[RunFolder], mode: str = "server") -> dict:
    """What the page loads first: every folder's runs with their settings, findings and figure numbers."""
    return dict(folders=[f.describe() for f in folders], mode=mode, baseline=BASELINE)


class _Handler(BaseHTTPRequestHandler):
    server_version = "unetscope-explore"
    folders: list[RunFolder] = []
    index_cache: dict = {}
    allowed: list[tuple[str, int]] = []  # set once bound: (name, port) pairs a Host header may name
    quiet = True

    def log_message(self, fmt, *args):  # no access log on the terminal
        if not self.quiet:
            super().log_message(fmt, *args)

    def _send(self, code: int, body: bytes, ctype: str, cache: bool = False) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "max-age=3600" if cache else "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj, code: int = 200) -> None:
        self._send(code, json.dumps(obj, allow_nan=False, default=_nan_free).encode(), "application/json")

    def _not_found(self, why: str = "not found") -> None:
        self._send(404, json.dumps({"error": why}).encode(), "application/json")

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        try:
            if not self._host_ok():
                return
            self._route()
        except ExploreError as e:
            self._json({"error": str(e)}, 500)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _host_ok(self) -> bool:
        """A Host this server answers, or a 403 (one line of text) and False: DNS rebinding's defence,
        before anything is read from the folders. No Host (HTTP/1.0), or more than one, is refused."""
        hosts = self.headers.get_all("Host") or []
        target = urllib.parse.urlsplit(self.path).netloc
        if len(hosts) != 1:
            what = "a request with no Host header" if not hosts else f"{len(hosts)} Host headers"
        elif not host_allowed(hosts[0], self.allowed):
            what = f"Host {hosts[0][:200]!r}"
        elif not self.path.startswith("/") and not host_allowed(target, self.allowed):
            what = f"Host {target[:200]!r}"  # an absolute URL (a proxy's form) names its own host: one served too
        else:
            return True
        body = f"unetscope explore: refused {what}: this server answers only {hosts_text(self.allowed)}\n"
        self._send(403, body.encode("utf-8", "backslashreplace"), "text/plain; charset=utf-8")
        return False

    def _route(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        path = url.path
        q = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
        if path in ("/", "/index.html"):
            return self._send(200, page_html('<link rel="stylesheet" href="/static/explorer.css">',
                                             '<script src="/static/explorer.js"></script>').encode(), "text/html; charset=utf-8")
        if path.startswith("/static/"):
            name = path[len("/static/"):]
            if name in ASSETS:  # a fixed list: no file name from the URL reaches the file system
                return self._send(200, asset(name).encode(), ASSETS[name], cache=False)
            return self._not_found()
        if path.startswith("/files/"):
            return self._file(path[len("/files/"):])
        if path == "/api/index":
            key = tuple(f.db_path.stat().st_mtime_ns if f.db_path.exists() else 0 for f in self.folders)
            if self.index_cache.get("key") != key:  # a run still being written: read again once its database changed
                self.index_cache.update(key=key, index=index(self.folders))
            self._json(self.index_cache["index"])
            if not self.index_cache.get("warmed"):  # the page is drawn: read the kept images while the user looks
                self.index_cache["warmed"] = True
                for f in reversed(self.folders):
                    for r in reversed(f._runs):  # last in, first read: the first folder's first run first
                        f.warm(r["run"])
            return
        if path.startswith("/api/"):
            return self._api(path[len("/api/"):], q)
        return self._not_found()

    def _folder_run(self, q):
        try:
            folder = self.folders[int(q.get("f", ""))]
        except (ValueError, IndexError):
            return None, None
        run = q.get("run", "")
        return (folder, run) if folder.run(run) is not None else (folder, None)

    def _api(self, name: str, q: dict) -> None:
        folder, run = self._folder_run(q)
        if run is None:
            return self._not_found("no such folder or run")
        try:
            seeds = parse_seeds(q.get("seeds"))
        except ValueError:
            return self._json({"error": f"seeds must look like 0-9,15; got {q.get('seeds')!r}"}, 400)
        cond = q.get("cond") or None
        if cond is not None:  # stored as canonical JSON: a prompt's non-ASCII letters as \u escapes
            try:
                cond = canonical(json.loads(cond))
            except ValueError:
                return self._json({"error": f"cond must be JSON (a class label or a prompt); got {cond[:80]!r}"}, 400)
        if name == "stats":
            folder.warm(run)  # the run's view is open: its images are read while the user looks
            return self._json(folder.variant_stats(run, cond, seeds))
        if name == "variant":
            return self._json(folder.variant_rows(run, q.get("vid", ""), cond, seeds, q.get("by") or None))
        try:
            seed = int(q.get("seed", ""))
        except ValueError:
            return self._not_found("seed must be an integer")
        if name == "seed":
            return self._json(folder.seed_rows(run, seed))
        if name == "image":
            png = folder.image_png(run, seed, q.get("vid", ""))
            if isinstance(png, bytes):
                return self._send(200, png, "image/png", cache=True)
            return self._not_found(png or "no image kept for this sample and variant")
        return self._not_found()

    def _file(self, rest: str) -> None:
        first, _, rel = rest.partition("/")
        try:
            folder = self.folders[int(first)]
        except (ValueError, IndexError):
            return self._not_found()
        path = folder.resolve(urllib.parse.unquote(rel))
        if path is None:
            return self._not_found()
        ctype = "image/png" if path.suffix.lower() == ".png" else "application/json"
        return self._send(200, path.read_bytes(), ctype, cache=True)


def _nan_free(o):
    raise TypeError(f"{type(o).__name__} is not JSON")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False  # a port in use is refused, not shared


def make_server(folders: list[RunFolder], host: str = "127.0.0.1", port: int = 8765, quiet: bool = True,
                allow_hosts=()) -> ThreadingHTTPServer:
    """A server over ``folders`` bound to ``host:port`` (not yet serving), answering the Host headers of
    ``allowed_hosts`` (its ``allowed``); ExploreError if it cannot bind or an ``allow_hosts`` is not a host."""
    if isinstance(allow_hosts, str):
        allow_hosts = [allow_hosts]
    for a in allow_hosts:  # checked before binding: a bad name binds nothing
        parse_allow_host(a, 1)
    handler = type("Handler", (_Handler,), dict(folders=folders, index_cache={}, quiet=quiet))
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        cls = type("Server", (_Server,), dict(address_family=family))
        srv = cls((host, port), handler)
    except socket.gaierror as e:
        raise ExploreError(f"--host {host!r} cannot be bound: {e.strerror or e}") from None
    except OverflowError:
        raise ExploreError(f"--port must be in 0..65535, got {port}") from None
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise ExploreError(f"port {port} on {host} is in use: give another --port (0 picks a free one)") from None
        if e.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
            raise ExploreError(f"--host {host!r} cannot be bound: it is not an address of this machine") from None
        if e.errno == errno.EACCES:
            raise ExploreError(f"port {port} needs privileges: give a --port above 1023 (0 picks a free one)") from None
        raise ExploreError(f"cannot serve on {host}:{port}: {e.strerror or e}") from None
    bound, bport = srv.server_address[:2]
    handler.allowed = srv.allowed = allowed_hosts(bound, bport, host, allow_hosts)
    return srv


def serve_in_thread(srv) -> threading.Thread:
    th = threading.Thread(target=srv.serve_forever, name="unetscope-explore", daemon=True)
    th.start()
    return th
