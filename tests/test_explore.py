"""``unetscope explore``: the server's endpoints, its refusals, its read-only promise, the --html export,
and the page in a real (headless) Chromium. Run folders are made here with the project's own commands
on the tiny test model."""

import contextlib
import hashlib
import http.client
import io
import json
import os
import re
import shutil
import socket
import sqlite3
import urllib.request
from pathlib import Path

import pytest

import unetscope as us
from unetscope.explore import ExploreError, explore
from unetscope.store import variant_id

CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome") if os.path.exists(p)), None)
DRIVER = next((p for p in ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver") if os.path.exists(p)), None)
EVIL = "evil<script>window.__pwned=1</script>"


def _cli(argv) -> tuple[int, str, str]:
    from unetscope.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


def _sweep(exp, model, out, steps=6):
    code, _, err = _cli(["sweep", exp, "--model", model, "--steps", steps, "--samples", 3, "--t-step", 2, "--images", 2,
                         "--out", out, "--threads", 1])
    assert code == 0, err[-2000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir):
    """Three run folders: a (block-utility + trajectory, S = 6), b (trajectory, S = 5: another sampler)
    and sc (a shortcut run); plus evil, a copy of b with a second run whose name holds a script tag,
    and findings that hold an HTML tag."""
    root = tmp_path_factory.mktemp("explore")
    a, b, sc = root / "a", root / "b", root / "sc"
    _sweep("block-utility", tiny_model_dir, a)
    _sweep("trajectory", tiny_model_dir, a)
    _sweep("trajectory", tiny_model_dir, b, steps=5)
    code, _, err = _cli(["shortcut", "--model", tiny_model_dir, "--steps", 6, "--samples", 3, "--preset", "paper",
                         "--repeats", 1, "--out", sc, "--threads", 1])
    assert code == 0, err[-2000:]
    evil = root / "evil"
    shutil.copytree(b, evil)
    with sqlite3.connect(evil / "results.sqlite") as db:
        old = db.execute("SELECT run FROM runs").fetchone()[0]
        # a second run, named with a script tag, holding the same rows (no file can be named after it)
        db.execute("INSERT INTO runs SELECT ?, experiment, settings, created + 1 FROM runs WHERE run = ?", (EVIL, old))
        db.execute("INSERT INTO results SELECT ?, seed, variant_id, variant, cond, ssim, psnr, extra FROM results "
                   "WHERE run = ?", (EVIL, old))
    for f in (evil / "findings").glob("*.json"):
        d = json.loads(f.read_text())
        d["findings"]["text"] = "findings <img src=x onerror=window.__pwned=2> end"
        f.write_text(json.dumps(d))
    return dict(root=root, a=a, b=b, sc=sc, evil=evil)


@pytest.fixture(scope="module")
def served(runs):
    ex = explore([runs["a"], runs["b"], runs["sc"]], port=0, browser=False, block=False, log=lambda *a: None)
    yield ex
    ex.close()


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=20) as r:
            return r.status, r.headers.get("Content-Type"), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read()


def _raw(ex, path):
    """GET a path exactly as written (no client-side normalisation of ``..``)."""
    host, port = ex.server.server_address[:2]
    c = http.client.HTTPConnection(host, port, timeout=20)
    c.request("GET", path)
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, body


def _api(ex, path):
    code, _, body = _get(ex.url + path.lstrip("/"))
    assert code == 200, body[:300]
    return json.loads(body)


def _tree(folder):
    """Every file and folder under ``folder``: size, modification time and hash."""
    out = {}
    for p in sorted(Path(folder).rglob("*")):
        st = p.stat()
        out[str(p.relative_to(folder))] = (p.is_dir(), st.st_size, st.st_mtime_ns,
                                           None if p.is_dir() else hashlib.sha1(p.read_bytes()).hexdigest())
    return out


def _run(index, folder, experiment):
    return next(r for r in index["folders"][folder]["runs"] if r["experiment"] == experiment)


# --- the server, without a browser -----------------------------------------------------------------------
def test_every_figure_point_is_its_variant(served):
    """Each clickable point of each figure maps to a stored variant whose mean over the samples is the
    number the figure draws (the mapping from figure to variant is right, not just present)."""
    index = _api(served, "/api/index")
    assert [len(f["runs"]) for f in index["folders"]] == [2, 1, 1]
    checked = 0
    for fi, folder in enumerate(index["folders"]):
        for r in folder["runs"]:
            stats = _api(served, f"/api/stats?f={fi}&run={r['run']}")
            for fig in r["figures"]:
                d = fig["data"]
                if d is None or r["experiment"] == "shortcut":
                    continue
                assert fig["variants"], fig["stem"]
                if d["kind"] == "heatmap":
                    pts = [(v, d["values"][i][j], "ssim") for i, row in enumerate(fig["variants"]) for j, v in enumerate(row)]
                else:
                    metric = "psnr" if "PSNR" in d["ylabel"] else "ssim"
                    pts = [(v, c["mean"][j], metric) for c, row in zip(d["curves"], fig["variants"]) for j, v in enumerate(row)]
                for vid, drawn, metric in pts:
                    n, ms, _, mp, _ = stats[vid]
                    assert n == 3
                    assert (mp if metric == "psnr" else ms) == pytest.approx(drawn, abs=1e-6), (fig["stem"], vid)
                    checked += 1
    assert checked > 20


def test_variant_rows_worst_first_with_images(served, runs):
    index = _api(served, "/api/index")
    r = _run(index, 0, "block-utility")
    heat = next(f for f in r["figures"] if f["stem"] == "block_utility_heatmap")
    vid = heat["variants"][-1][0]
    d = _api(served, f"/api/variant?f=0&run={r['run']}&vid={vid}")
    assert d["variant"]["interventions"][0]["type"] == "DropBlocks"
    ss = [x["ssim"] for x in d["rows"]]
    assert len(ss) == 3 and ss == sorted(ss)
    assert sorted(int(s) for s in d["images"]) == [0, 1]  # --images 2: the first two seeds kept theirs
    code, ctype, png = _get(served.url + f"api/image?f=0&run={r['run']}&seed=0&vid={vid}")
    assert code == 200 and ctype == "image/png" and png[:8] == b"\x89PNG\r\n\x1a\n"
    code, _, body = _get(served.url + f"api/image?f=0&run={r['run']}&seed=2&vid={vid}")  # seed 2 kept no images
    assert code == 404 and b"no image kept" in body
    one = _api(served, f"/api/variant?f=0&run={r['run']}&vid={vid}&seeds=1-2")
    assert sorted(x["seed"] for x in one["rows"]) == [1, 2]
    st = _api(served, f"/api/stats?f=0&run={r['run']}&seeds=0")
    assert st[vid][0] == 1
    cond = json.dumps(one["rows"][0]["cond"])
    assert all(x["cond"] == one["rows"][0]["cond"] for x in _api(served, f"/api/variant?f=0&run={r['run']}&vid={vid}&cond={cond}")["rows"])


def test_trajectory_seed_rows(served):
    index = _api(served, "/api/index")
    r = _run(index, 0, "trajectory")
    d = _api(served, f"/api/seed?f=0&run={r['run']}&seed=0")
    kinds = {(x["variant"]["type"], x["variant"].get("t")) for x in d["rows"]}
    assert ("x_est0", 6) in kinds and ("x_t", 1) in kinds
    assert variant_id({"type": "x_t", "t": 4}) in d["images"]


@pytest.mark.parametrize("path", [
    "/files/0/../b/results.sqlite", "/files/0/" + "../" * 30 + "etc/passwd", "/files/0/" + "%2e%2e/" * 30 + "etc/passwd",
    "/files/0/" + "..%2f" * 30 + "etc%2fpasswd",
    "/files/0/..%2fb%2ffindings", "/files/0//etc/passwd", "/files/0/results.sqlite", "/files/0/images",
    "/files/9/x.png", "/files/0/%00.png", "/static/../server.py", "/static/..%2f__init__.py", "/../../etc/passwd",
    "/api/image?f=0&run=../../etc&seed=0&vid=x", "/api/variant?f=0&run=nope&vid=x"])
def test_traversal_is_refused(served, path):
    code, body = _raw(served, path)
    assert code == 404, (path, body[:200])
    assert b"root:" not in body and b"SQLite format" not in body


def test_a_link_out_of_the_folder_is_refused(runs, tmp_path):
    folder = tmp_path / "linked"
    shutil.copytree(runs["b"], folder)
    secret = tmp_path / "secret.json"
    secret.write_text('{"secret": 1}')
    (folder / "figures" / "out.json").symlink_to(secret)
    ex = explore([folder], port=0, browser=False, block=False, log=lambda *a: None)
    try:
        assert _raw(ex, "/files/0/figures/out.json")[0] == 404
        fig = next(folder.glob("figures/*/*.json")).relative_to(folder)
        assert _raw(ex, f"/files/0/{fig}")[0] == 200  # a real figure file is served
    finally:
        ex.close()


# --- the Host header: a page on another name that resolves here (DNS rebinding) reads nothing ----------------
def _with_host(ex, path, host, method="GET"):
    """``path`` sent with the Host header ``host`` exactly (None: no Host header at all; a list: one each)."""
    h, port = ex.server.server_address[:2]
    c = http.client.HTTPConnection(h, port, timeout=20)
    try:
        c.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for one in [] if host is None else host if isinstance(host, list) else [host]:
            c.putheader("Host", one)
        c.endheaders()
        r = c.getresponse()
        return r.status, r.headers, r.read()
    finally:
        c.close()


def _http10(ex, path):
    """An HTTP/1.0 request, which carries no Host header, on a raw socket."""
    with socket.create_connection(ex.server.server_address[:2], timeout=20) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), head.decode("latin-1"), body


def _routes(ex):
    """One request of every kind the server answers: the page, an asset, each JSON endpoint, a kept
    image, a figure's file, and a path it does not serve."""
    index = _api(ex, "/api/index")
    r = _run(index, 0, "block-utility")
    vid = next(iter(_api(ex, f"/api/stats?f=0&run={r['run']}")))
    return ["/", "/index.html", "/static/explorer.js", "/api/index", f"/api/stats?f=0&run={r['run']}",
            f"/api/variant?f=0&run={r['run']}&vid={vid}", f"/api/seed?f=0&run={r['run']}&seed=0",
            f"/api/image?f=0&run={r['run']}&seed=0&vid={vid}", f"/files/0/{r['figures'][0]['file']}",
            "/files/0/../b/results.sqlite", "/nowhere"]


def test_a_host_it_does_not_serve_is_refused_before_anything_is_read(runs, monkeypatch):
    """Forged Host headers (another name, another port, a name that merely starts like localhost, none at
    all) get a 403 with one line of text, the page's security headers and nothing else, on every route,
    and no method of the folders runs; the names it serves, in any case, get the same answers as ever."""
    import threading

    from unetscope.explore import data, server

    ex = explore([runs["a"]], port=0, browser=False, block=False, log=lambda *a: None)
    try:
        port = ex.server.server_address[1]
        routes = _routes(ex)
        ok = {path: _with_host(ex, path, f"127.0.0.1:{port}") for path in routes}
        assert [ok[p][0] for p in routes] == [200] * 9 + [404, 404], [(p, ok[p][0]) for p in routes]
        allowed = f"this server answers only 127.0.0.1:{port}, localhost:{port}, [::1]:{port}"
        calls = []
        for name in ("connect", "query", "run", "describe", "resolve", "variant_stats", "variant_rows", "seed_rows",
                     "image_png", "warm", "kept_seeds"):
            real = getattr(data.RunFolder, name)

            def spy(self, *a, _real=real, _name=name, **k):
                if self is ex.server.RequestHandlerClass.folders[0] and threading.current_thread().name != "unetscope-explore-warm":
                    calls.append(_name)  # a request's own reads (the background reader serves the earlier 200s)
                return _real(self, *a, **k)

            monkeypatch.setattr(data.RunFolder, name, spy)
        forged = [f"evil.example:{port}", f"127.0.0.1:{port + 1 if port < 65535 else 1}", f"localhost.evil.com:{port}",
                  f"127.0.0.1:{port}.evil.com", f"EVIL.example:{port}", "127.0.0.1", "localhost", None]
        for host in forged:
            for path in routes:
                code, headers, body = _with_host(ex, path, host)
                what = "a request with no Host header" if host is None else f"Host {host!r}"
                assert (code, body.decode()) == (403, f"unetscope explore: refused {what}: {allowed}\n"), (host, path)
                assert headers["Content-Type"] == "text/plain; charset=utf-8"
                assert headers["Content-Security-Policy"] == server.CSP and headers["X-Content-Type-Options"] == "nosniff"
                assert headers["Referrer-Policy"] == "no-referrer" and headers["Cache-Control"] == "no-store"
        code, head, body = _http10(ex, "/api/index")
        assert (code, body.decode()) == (403, f"unetscope explore: refused a request with no Host header: {allowed}\n")
        assert server.CSP in head
        code, _, body = _with_host(ex, "/api/index", [f"127.0.0.1:{port}", f"evil.example:{port}"])
        assert (code, body.decode()) == (403, f"unetscope explore: refused 2 Host headers: {allowed}\n")
        code, headers, body = _with_host(ex, "/api/index", f"evil.example:{port}", method="HEAD")
        assert code == 403 and body == b""
        # an absolute URL in the request line names its own host: it must be one served too
        assert _with_host(ex, f"http://evil.example:{port}/api/index", f"127.0.0.1:{port}")[0] == 403
        assert calls == [], calls  # nothing was read from the folder for any refused request
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LocalHost:{port}", f"[::1]:{port}", f" localhost:{port} "):
            for path in routes:
                code, _, body = _with_host(ex, path, host)
                assert (code, body) == ok[path][::2], (host, path)
    finally:
        ex.close()


def test_the_hosts_a_server_answers():
    """The rule: the address bound and the loopback names with the bound port (without it only where a
    browser leaves it out); bound to 0.0.0.0, the machine's names too, and the first line names them all."""
    from unetscope.explore import first_line
    from unetscope.explore.server import allowed_hosts, host_allowed

    lo = allowed_hosts("127.0.0.1", 8765, "127.0.0.1")
    assert lo == [("127.0.0.1", 8765), ("localhost", 8765), ("[::1]", 8765)]
    assert [host_allowed(h, lo) for h in ("localhost:8765", "[::1]:8765", "localhost", "localhost:80", None, "")] == \
        [True, True, False, False, False, False]
    assert host_allowed("localhost", allowed_hosts("127.0.0.1", 80)) and host_allowed("localhost:80", allowed_hosts("127.0.0.1", 80))
    assert allowed_hosts("::1", 9000, "::1")[0] == ("[::1]", 9000)
    assert ("myhost.example", 8765) in allowed_hosts("127.0.0.1", 8765, "MyHost.example")  # --host as a name
    line = first_line(1, 2, "http://127.0.0.1:8765/", lo, "127.0.0.1")
    assert line == "unetscope explore: 1 folder, 2 runs at http://127.0.0.1:8765/ (read-only; Ctrl-C stops)"

    wild = allowed_hosts("0.0.0.0", 8765, "0.0.0.0", ["box.example", "10.1.2.3", "fe80::1", "proxy.example:443"])
    names = [f"{socket.gethostname().lower()}:8765", f"{socket.getfqdn().lower()}:8765"]
    want = list(dict.fromkeys(["0.0.0.0:8765", "127.0.0.1:8765", "localhost:8765", "[::1]:8765", *names,
                               "box.example:8765", "10.1.2.3:8765", "[fe80::1]:8765", "proxy.example:443"]))
    assert [f"{n}:{p}" for n, p in wild] == want
    assert host_allowed("proxy.example", wild) and not host_allowed("box.example", wild)
    line = first_line(1, 2, "http://0.0.0.0:8765/", wild, "0.0.0.0")
    assert "\n" not in line and line.startswith("unetscope explore: 1 folder, 2 runs at http://0.0.0.0:8765/ ")
    assert line.endswith(f"it answers only Host {', '.join(want)} (--allow-host NAME adds one)")


def test_allow_host_adds_a_name_in_the_command_and_its_twin(runs):
    """--allow-host (allow_hosts=): the first line names the hosts answered, the name added is answered,
    others still refused; a bad one is a one-line error, exit 2, before anything is bound."""
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-m", "unetscope.cli", "explore", str(runs["b"]), "--port", "0", "--no-browser",
                          "--allow-host", "Box.Example", "--allow-host", "10.1.2.3:9000"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(us.__file__).parents[1]),
                                                                                       os.environ.get("PYTHONPATH")]))})
    try:
        line = p.stdout.readline()
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", line).group(1))
        assert line.rstrip().endswith(f"it answers only Host 127.0.0.1:{port}, localhost:{port}, [::1]:{port}, "
                                      f"box.example:{port}, 10.1.2.3:9000 (--allow-host NAME adds one)"), line
        for host, code in ((f"box.example:{port}", 200), ("10.1.2.3:9000", 200), (f"10.1.2.3:{port}", 403),
                           (f"evil.example:{port}", 403)):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
            c.putrequest("GET", "/api/index", skip_host=True)
            c.putheader("Host", host)
            c.endheaders()
            assert c.getresponse().status == code, host
            c.close()
    finally:
        p.terminate()
        p.wait(30)
    lines = []
    ex = explore(runs["b"], port=0, browser=False, block=False, allow_hosts="box.example", log=lines.append)
    try:
        port = ex.server.server_address[1]
        assert lines[0].endswith(f"Host 127.0.0.1:{port}, localhost:{port}, [::1]:{port}, box.example:{port} "
                                 "(--allow-host NAME adds one)")
        assert _with_host(ex, "/api/index", f"box.example:{port}")[0] == 200
    finally:
        ex.close()
    for bad in ("evil example", "http://evil.example", "evil.example:0", "evil.example:99999", ":8765", "[1.2.3.4]"):
        _one_line_exit_2([runs["b"], "--port", 0, "--allow-host", bad], f"--allow-host must be a host name or address, "
                         f"optionally with :PORT; got {bad!r}")
        with pytest.raises(ExploreError, match="--allow-host must be"):
            explore(runs["b"], port=0, browser=False, block=False, allow_hosts=[bad], log=lambda *a: None)


def test_the_explorer_never_writes_and_takes_no_lock(served, runs):
    """A round of every endpoint leaves the folders' trees as they were."""
    before = {k: _tree(runs[k]) for k in ("a", "b", "sc")}
    index = _api(served, "/api/index")
    for fi, folder in enumerate(index["folders"]):
        for r in folder["runs"]:
            stats = _api(served, f"/api/stats?f={fi}&run={r['run']}&seeds=0-1")
            for vid in list(stats)[:5]:
                _api(served, f"/api/variant?f={fi}&run={r['run']}&vid={vid}")
                _get(served.url + f"api/image?f={fi}&run={r['run']}&seed=0&vid={vid}")
            _api(served, f"/api/seed?f={fi}&run={r['run']}&seed=0")
            for fig in r["figures"]:
                assert _get(served.url + f"files/{fi}/{fig['file']}")[0] == 200
    assert {k: _tree(runs[k]) for k in ("a", "b", "sc")} == before


def test_a_folder_being_written_is_explored(runs, tmp_path):
    """A sweep at work: its writer lock held and a write transaction open; the explorer reads on."""
    from unetscope.store import folder_lock

    folder = tmp_path / "busy"
    shutil.copytree(runs["b"], folder)
    with folder_lock(folder):
        db = sqlite3.connect(folder / "results.sqlite")
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO stats VALUES ('x', 'y', '1')")
        try:
            ex = explore([folder], port=0, browser=False, block=False, log=lambda *a: None)
            try:
                run = _api(ex, "/api/index")["folders"][0]["runs"][0]["run"]
                assert _api(ex, f"/api/stats?f=0&run={run}")
            finally:
                ex.close()
        finally:
            db.rollback()
            db.close()


def _one_line_exit_2(argv, what):
    code, out, err = _cli(["explore", *argv, "--no-browser"])
    assert code == 2, (argv, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("unetscope explore: error:") and what in lines[0], err
    return lines[0]


def test_bad_input_is_one_line_and_exit_2(runs, tmp_path):
    before = _tree(runs["root"])
    (tmp_path / "empty").mkdir()
    _one_line_exit_2([tmp_path / "empty"], "not a run folder")
    _one_line_exit_2([tmp_path / "nowhere"], "is not a folder")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "results.sqlite").write_bytes(b"this is not a database" * 100)
    _one_line_exit_2([broken], "damaged")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        _one_line_exit_2([runs["a"], "--port", busy.getsockname()[1]], "in use")
    finally:
        busy.close()
    _one_line_exit_2([runs["a"], "--host", "192.0.2.1", "--port", 0], "cannot be bound")  # TEST-NET: no address here
    _one_line_exit_2([runs["a"], "--port", 70000], "0..65535")
    _one_line_exit_2([runs["a"], "--html", runs["a"] / "x.html"], "never writes into a run folder")
    assert _tree(runs["root"]) == before
    assert list((tmp_path / "broken").iterdir()) == [broken / "results.sqlite"]


def test_a_damaged_or_missing_image_says_so(runs, tmp_path):
    folder = tmp_path / "damaged"
    shutil.copytree(runs["a"], folder)
    run = next(p.name for p in (folder / "images").iterdir() if p.name.startswith("block-utility"))
    (folder / "images" / run / "00000.pt").write_bytes(b"not a tensor file")
    ex = explore([folder], port=0, browser=False, block=False, log=lambda *a: None)
    try:
        vid = next(iter(_api(ex, f"/api/stats?f=0&run={run}")))
        code, _, body = _get(ex.url + f"api/image?f=0&run={run}&seed=0&vid={vid}")
        assert code == 404 and b"damaged" in body
        assert _api(ex, f"/api/variant?f=0&run={run}&vid={vid}")["images"]["0"] == {"error": json.loads(body)["error"]}
        assert _get(ex.url + f"api/image?f=0&run={run}&seed=1&vid={vid}")[0] == 200  # the other seed's file is whole
    finally:
        ex.close()


def test_the_explorer_imports_no_torch(runs):
    """The command starts in a fraction of a second: no torch on its path, images read with numpy."""
    import subprocess
    import sys

    code = ("import sys, json, urllib.request; import unetscope as us, unetscope.cli; unetscope.cli.build_parser(); "
            "ex = us.explore(sys.argv[1], port=0, browser=False, block=False, log=lambda *a: None); "
            "g = lambda p: urllib.request.urlopen(ex.url + p).read(); idx = json.loads(g('api/index')); "
            "run = [r['run'] for r in idx['folders'][0]['runs'] if r['experiment'] == 'block-utility'][0]; "
            "vid = next(iter(json.loads(g('api/stats?f=0&run=' + run)))); "
            "assert g('api/image?f=0&run=%s&seed=0&vid=%s' % (run, vid)).startswith(b'\\x89PNG'); "
            "print('torch' in sys.modules, sorted(us.__all__) == sorted(set(dir(us)) & set(us.__all__)))")
    out = subprocess.run([sys.executable, "-c", code, str(runs["a"])], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "True"]


def test_images_are_read_without_torch_as_torch_reads_them(runs, tmp_path):
    import pickle

    import numpy as np
    import torch

    from unetscope.explore.ptread import PtFormatError, read_pt

    f = next((runs["a"] / "images").glob("block-utility*/00000.pt"))
    want, got = torch.load(f, weights_only=True), read_pt(f)
    assert set(got) == set(want) and all(np.array_equal(got[k], v.numpy()) for k, v in want.items())
    t = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    views = {"a": t[:, 1:, ::2], "b": t.transpose(0, 2), "c": torch.zeros(0, 3, dtype=torch.uint8)}  # offsets, strides
    torch.save(views, tmp_path / "v.pt")
    assert all(np.array_equal(read_pt(tmp_path / "v.pt")[k], v.numpy()) for k, v in views.items())

    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    torch.save({"a": Evil()}, tmp_path / "evil.pt", pickle_protocol=2)
    for bad in (tmp_path / "evil.pt", f.with_name("missing.pt")):
        with pytest.raises(PtFormatError):
            read_pt(bad)
    (tmp_path / "junk.pt").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(PtFormatError):
        read_pt(tmp_path / "junk.pt")


def test_the_python_twin(runs):
    assert us.explore is explore and "explore" in us.__all__
    ex = us.explore(runs["a"], port=0, browser=False, block=False, log=lambda *a: None)
    try:
        assert ex.url.startswith("http://127.0.0.1:")
        code, ctype, body = _get(ex.url)
        assert code == 200 and b"unetscope explorer" in body and ctype.startswith("text/html")
    finally:
        ex.close()


def test_the_background_reader_reads_every_asked_run_once_and_rests(runs, monkeypatch):
    """Views opened while others are read: the newest first, then the rest, each run's statistics read once.
    (Yielding to any queued run made two queued runs hand the reader to each other forever, a busy core.)"""
    import time

    from unetscope.explore import data

    reads = []
    real = data.RunFolder.variant_stats

    def counting(self, run, *a, **k):
        if any(self is f for f in folders):  # not a request an earlier test's server left queued
            reads.append(run)
        return real(self, run, *a, **k)

    folders = [data.RunFolder(runs["a"]), data.RunFolder(runs["b"], 1)]
    monkeypatch.setattr(data.RunFolder, "variant_stats", counting)
    asked = [(f, r["run"]) for f in folders for r in f._runs]
    assert len(asked) == 3
    for f, run in asked + asked[::-1]:  # six views asked at once, each run twice
        f.warm(run)

    def all_read():
        return all(f.kept(run, seed, load=False) is not None for f, run in asked for seed in f.kept_seeds(run))

    deadline = time.time() + 60
    while time.time() < deadline and not (data._WARM_QUEUE.empty() and all_read()):
        time.sleep(0.02)
    assert data._WARM_QUEUE.empty() and all_read() and all(f.kept_seeds(run) for f, run in asked)
    time.sleep(0.3)
    n = len(reads)
    time.sleep(0.5)
    assert len(reads) == n <= 6, reads  # at rest, each asked view's statistics read once


def test_a_view_asked_while_another_is_read_goes_first(runs, monkeypatch):
    """The reader, busy with one run's images when another view is asked, reads that view's files
    first and then the seeds it had left; a run whose statistics cannot be read still has its images read."""
    import threading
    import time

    from unetscope.explore import data

    a, b = data.RunFolder(runs["a"]), data.RunFolder(runs["b"], 1)
    run_a, run_b = a._runs[0]["run"], b._runs[0]["run"]
    order, started, go = [], threading.Event(), threading.Event()
    real_images, real_stats = data.RunFolder._seed_images, data.RunFolder.variant_stats

    def images(self, run, seed, load=True):
        if self is a or self is b:
            order.append((self.index, seed))
            if self is a and not started.is_set():
                started.set()
                go.wait(30)  # busy with a's first seed while b's view is asked
        return real_images(self, run, seed, load)

    def stats(self, run, *args, **kw):
        if self is b:
            raise data.ExploreError("damaged")  # its view's own request says so; its images are still read
        return real_stats(self, run, *args, **kw)

    monkeypatch.setattr(data.RunFolder, "_seed_images", images)
    monkeypatch.setattr(data.RunFolder, "variant_stats", stats)
    ka, kb = a.kept_seeds(run_a)[:16], b.kept_seeds(run_b)[:16]
    assert len(ka) >= 2 and kb
    a.warm(run_a)
    assert started.wait(30)
    b.warm(run_b)
    go.set()
    deadline = time.time() + 60
    while time.time() < deadline and len(order) < len(ka) + len(kb):
        time.sleep(0.02)
    time.sleep(0.2)
    assert order == [(0, ka[0])] + [(1, s) for s in kb] + [(0, s) for s in ka[1:]]


def _export_blob(path):
    text = Path(path).read_text()
    m = re.search(r"window\.UNETSCOPE_EXPLORER = (\{.*?\});</script>", text, flags=re.S)
    return text, json.loads(m.group(1))


def test_html_export_holds_figures_and_worst_best_pairs(runs, tmp_path):
    out = tmp_path / "explorer.html"
    code, stdout, err = _cli(["explore", runs["a"], runs["sc"], runs["evil"], "--html", out])
    assert code == 0, err
    assert "wrote" in stdout
    text, data = _export_blob(out)
    assert "<script>window.__pwned" not in text and "http://" not in text.split("<script>")[0]
    assert "at most 64 px" in data["index"]["export"]
    _holds_worst_and_best_pairs(data, kept=(0, 1))


def test_html_export_of_a_quick_reproduce_folder(tmp_path):
    """The repository's results/mnist-quick (``unetscope reproduce --quick`` on the MNIST U-Net)."""
    folder = Path(__file__).resolve().parents[1] / "results" / "mnist-quick"
    if not (folder / "results.sqlite").exists():
        pytest.skip("results/mnist-quick is not in this checkout")
    before = _tree(folder)
    out = tmp_path / "quick.html"
    code, _, err = _cli(["explore", folder, "--html", out])
    assert code == 0, err
    _, data = _export_blob(out)
    assert len(data["index"]["folders"][0]["runs"]) == 6
    assert _holds_worst_and_best_pairs(data, kept=(0, 1, 2, 3)) >= 6
    assert _tree(folder) == before


def _holds_worst_and_best_pairs(data, kept) -> int:
    """Every picture figure is in the file, and every figure's worst and best point have the baseline |
    intervened pair of each kept seed; returns how many figures with points were checked."""
    checked = 0
    for fi, folder in enumerate(data["index"]["folders"]):
        for r in folder["runs"]:
            key = f"{fi}/{r['run']}"
            rows = data["rows"][key]
            for fig in r["figures"]:
                if fig["data"] is None:
                    assert f"{fi}/{fig['file']}" in data["files"], fig["file"]  # picture figures inlined
                    continue
                if not fig["variants"] or r["experiment"] == "shortcut":
                    continue
                vids = [v for row in fig["variants"] for v in row if v]
                means = {v: sum(x for x in rows["variants"][v][2]) / len(rows["variants"][v][2]) for v in vids}
                worst, best = min(means, key=means.get), max(means, key=means.get)
                for v in (worst, best):
                    for seed in kept:  # the kept seeds: baseline | intervened of each
                        assert f"{seed}/{v}" in data["images"][key], (fig["stem"], v)
                        assert f"{seed}/{data['baseline']}" in data["images"][key]
                checked += 1
    return checked


# --- in a real browser ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None or DRIVER is None:
        pytest.skip("no Chromium here (apt-get install chromium chromium-driver): the browser tests need one")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    o = Options()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1300,900",
              "--disable-extensions", "--no-first-run"):
        o.add_argument(a)
    o.binary_location = CHROMIUM
    o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(DRIVER), options=o)
    d.set_page_load_timeout(60)
    yield d
    d.quit()


def _wait(d, js, timeout=20):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(d, timeout, poll_frequency=0.05).until(lambda d: d.execute_script("return " + js))


def _errors(d):
    return [e for e in d.get_log("browser") if e["level"] == "SEVERE"]


def _open(d, url):
    d.get(url)
    _wait(d, "document.body.getAttribute('data-ready') === '1'")


def _click_heat_cell(d):
    from selenium.webdriver.common.by import By

    cell = d.find_element(By.CSS_SELECTOR, "[data-stem=block_utility_heatmap] rect.cell[data-vid]")
    cell.click()
    return cell.get_attribute("data-vid")


def test_page_loads_without_console_errors_and_a_cell_shows_its_images(browser, served):
    d = browser
    _open(d, served.url)
    d.get_log("browser")
    index = _api(served, "/api/index")
    for fi, folder in enumerate(index["folders"]):
        for r in folder["runs"]:
            d.execute_script("location.hash = arguments[0]", f"#f={fi}&run={r['run']}")
            _wait(d, "document.querySelector('main h2') && document.querySelectorAll('#nav button.on').length === 1")
    _open(d, served.url + "#f=0&run=" + _run(index, 0, "block-utility")["run"])
    vid = _click_heat_cell(d)
    _wait(d, f"document.querySelectorAll('.detail .pairs[data-vid=\"{vid}\"] img').length === 4 && "
             "Array.from(document.querySelectorAll('.detail .pairs img')).every(i => i.complete && i.naturalWidth > 0)")
    pairs = d.execute_script("return Array.from(document.querySelectorAll('.detail .pair')).map(p => +p.dataset.seed)")
    assert sorted(pairs) == [0, 1]  # two kept seeds: two pairs, baseline | intervened
    assert d.execute_script("return document.querySelectorAll('.detail table.rows tr').length") == 1 + 3
    assert _errors(d) == []


def test_filter_and_trajectory_slider(browser, served):
    from selenium.webdriver.common.by import By

    d = browser
    index = _api(served, "/api/index")
    _open(d, served.url + "#f=0&run=" + _run(index, 0, "trajectory")["run"])
    _wait(d, "document.querySelectorAll('#trajectory img').length === 3 && "
             "Array.from(document.querySelectorAll('#trajectory img')).every(i => i.complete && i.naturalWidth > 0)")
    d.execute_script("var s = document.getElementById('traj-t'); s.value = 1; s.dispatchEvent(new Event('input'))")
    _wait(d, "/t = 4 /.test(document.querySelector('#trajectory b').textContent)")
    d.find_element(By.ID, "f-seeds").send_keys("0")
    d.find_element(By.ID, "f-apply").click()
    _wait(d, "/filtered: 1 of 3/.test(document.querySelector('.filters .note').textContent)")
    assert _errors(d) == []


def test_compare_mode_draws_two_curves(browser, served):
    d = browser
    _open(d, served.url + "#compare")
    _wait(d, "document.querySelector('[data-stem=trajectory_ssim_est0] path.curve') !== null")
    labels = d.execute_script("return Array.from(document.querySelectorAll('[data-stem=trajectory_ssim_est0] path.curve'))"
                              ".map(p => p.getAttribute('data-label'))")
    assert len(labels) == 2 and labels[0].startswith("a: ") and labels[1].startswith("b: ")
    diffs = d.execute_script("return Array.from(document.querySelectorAll('[data-experiment=trajectory] table.differences th'))"
                             ".map(t => t.textContent)")
    assert "sampler.steps" in diffs  # the difference named: S = 6 against S = 5
    assert _errors(d) == []


def test_shortcut_view(browser, served):
    d = browser
    index = _api(served, "/api/index")
    _open(d, served.url + "#f=2&run=" + index["folders"][2]["runs"][0]["run"])
    _wait(d, "document.querySelector('#timeline rect') !== null && document.querySelector('rect.bar') !== null")
    d.execute_script("document.querySelector('rect.bar').dispatchEvent(new MouseEvent('click'))")
    _wait(d, "document.querySelector('.detail table.rows') !== null")
    assert d.execute_script("return document.querySelectorAll('#best-worst table.rows').length") == 2
    assert "time saving" in d.execute_script("return document.getElementById('savings').textContent")
    assert _errors(d) == []


def test_escaped_names_and_findings(browser, runs):
    d = browser
    ex = explore([runs["evil"]], port=0, browser=False, block=False, log=lambda *a: None)
    try:
        _open(d, ex.url)
        assert d.execute_script("return window.__pwned") is None
        nav = d.execute_script("return document.getElementById('nav').textContent")
        assert EVIL in nav  # shown as text
        d.execute_script("document.querySelector('#nav button[data-run*=evil]').click()")
        _wait(d, "document.querySelector('main h2') && document.querySelector('main .source').textContent.indexOf('evil<script>') >= 0")
        assert d.execute_script("return window.__pwned") is None
        d.execute_script("document.querySelectorAll('#nav button')[0].click()")
        _wait(d, "document.querySelector('.findings') !== null")
        assert "<img src=x" in d.execute_script("return document.querySelector('.findings').textContent")
        assert d.execute_script("return document.querySelectorAll('main script, nav script, main img[src=x]').length") == 0
    finally:
        ex.close()


def test_html_file_works_from_file_url(browser, runs, tmp_path):
    d = browser
    out = tmp_path / "explorer.html"
    assert _cli(["explore", runs["a"], runs["b"], runs["evil"], "--html", out])[0] == 0
    _, data = _export_blob(out)
    _open(d, out.as_uri())
    d.get_log("browser")
    assert d.execute_script("return window.__pwned") is None
    r = _run(data["index"], 0, "block-utility")
    heat = next(f for f in r["figures"] if f["stem"] == "block_utility_heatmap")
    rows = data["rows"][f"0/{r['run']}"]["variants"]
    worst = min((v for row in heat["variants"] for v in row), key=lambda v: sum(rows[v][2]))
    d.execute_script("location.hash = arguments[0]", f"#f=0&run={r['run']}")
    _wait(d, f"document.querySelector('rect.cell[data-vid=\"{worst}\"]') !== null")
    d.execute_script(f"document.querySelector('rect.cell[data-vid=\"{worst}\"]').dispatchEvent(new MouseEvent('click'))")
    _wait(d, "document.querySelectorAll('.detail .pairs img').length === 4 && "
             "Array.from(document.querySelectorAll('.detail .pairs img')).every(i => i.complete && i.naturalWidth > 0)")
    d.execute_script("location.hash = '#compare'")
    _wait(d, "document.querySelectorAll('[data-stem=trajectory_ssim_est0] path.curve').length === 3")
    assert _errors(d) == []


def test_the_browser_round_writes_nothing(browser, served, runs):
    """The tree of each folder is the same before and after a round of clicks in the page."""
    d = browser
    before = {k: _tree(runs[k]) for k in ("a", "b", "sc")}
    index = _api(served, "/api/index")
    _open(d, served.url + "#f=0&run=" + _run(index, 0, "block-utility")["run"])
    _click_heat_cell(d)
    _wait(d, "document.querySelectorAll('.detail .pairs img').length === 4")
    d.execute_script("document.querySelector('[data-stem=block_utility_ssim] circle.pt').dispatchEvent(new MouseEvent('click'))")
    _wait(d, "document.querySelector('.detail .pairs') !== null")
    _open(d, served.url + "#compare")
    d.execute_script("document.querySelector('[data-stem=trajectory_ssim_est0] circle.pt').dispatchEvent(new MouseEvent('click'))")
    _wait(d, "document.querySelector('.detail table.rows') !== null")
    assert {k: _tree(runs[k]) for k in ("a", "b", "sc")} == before


def test_a_damaged_image_says_so_in_place(browser, runs, tmp_path):
    folder = tmp_path / "damaged"
    shutil.copytree(runs["a"], folder)
    run = next(p.name for p in (folder / "images").iterdir() if p.name.startswith("block-utility"))
    (folder / "images" / run / "00001.pt").write_bytes(b"not a tensor file")
    ex = explore([folder], port=0, browser=False, block=False, log=lambda *a: None)
    try:
        _open(browser, ex.url + "#f=0&run=" + run)
        _click_heat_cell(browser)
        _wait(browser, "Array.from(document.querySelectorAll('.detail .pair[data-seed=\"1\"] .missing'))"
                       ".some(m => /damaged/.test(m.textContent))")
        _wait(browser, "document.querySelectorAll('.detail .pair[data-seed=\"0\"] img').length === 2")  # the whole file's pair
    finally:
        ex.close()


# --- feature-change: statistics of activations, no images ------------------------------------------------
@pytest.fixture(scope="module")
def fc(tmp_path_factory, tiny_model_dir):
    """A feature-change run folder (tiny model, S = 4, 3 samples) and its explorer."""
    out = tmp_path_factory.mktemp("fc") / "fc"
    code, _, err = _cli(["sweep", "feature-change", "--model", tiny_model_dir, "--steps", 4, "--samples", 3, "--images", 1,
                         "--out", out, "--threads", 1])
    assert code == 0, err[-2000:]
    ex = explore([out], port=0, browser=False, block=False, log=lambda *a: None)
    yield dict(out=out, ex=ex)
    ex.close()


def test_feature_change_points_hold_their_statistics(fc, tmp_path):
    ex = fc["ex"]
    r = _run(_api(ex, "/api/index"), 0, "feature-change")
    figs = {f["stem"]: f for f in r["figures"]}
    assert {s: figs[s]["stat"] for s in figs} == {"feature_change_heatmap": "rel_l1", "feature_change_cosine": "cos",
                                                  "feature_change_units": "rel_l1"}
    heat, cos = figs["feature_change_heatmap"], figs["feature_change_cosine"]
    stats = _api(ex, f"/api/stats?f=0&run={r['run']}")
    for fig, stat in ((heat, "rel_l1"), (cos, "cos")):
        d = fig["data"]
        for i, unit in enumerate(d["rows"]):
            for j, t in enumerate(d["cols"]):
                vid = fig["variants"][i][j]
                assert vid == variant_id({"type": "feature-change", "site": unit, "t": t})
                n, m, sd = stats[vid][5][stat]  # hover: mean, sd, n over the samples, as the figure's cell
                assert n == 3 and m == pytest.approx(d["values"][i][j], rel=1e-6) and sd >= 0
    units = figs["feature_change_units"]
    assert units["variants"][0][0] == variant_id({"type": "feature-change", "site": units["data"]["curves"][0]["label"],
                                                  "t": units["data"]["curves"][0]["x"][0]})
    vid = heat["variants"][0][0]
    by_l1 = _api(ex, f"/api/variant?f=0&run={r['run']}&vid={vid}&by=rel_l1")
    by_cos = _api(ex, f"/api/variant?f=0&run={r['run']}&vid={vid}&by=cos")
    l1 = [x["extra"]["rel_l1"] for x in by_l1["rows"]]
    assert len(l1) == 3 and l1 == sorted(l1, reverse=True) and by_l1["by"] == "rel_l1"  # the largest change first
    cs = [x["extra"]["cos"] for x in by_cos["rows"]]
    assert cs == sorted(cs) and all(x["ssim"] is None for x in by_cos["rows"])
    flt = _api(ex, f"/api/stats?f=0&run={r['run']}&seeds=0-1")[vid][5]["rel_l1"]
    assert flt[0] == 2 and flt[1] == pytest.approx(sum(x["extra"]["rel_l1"] for x in by_l1["rows"] if x["seed"] < 2) / 2)
    res = explore([fc["out"]], html=tmp_path / "fc.html", log=lambda *a: None)  # the shared file holds the values too
    v = _export_blob(res["path"])[1]["rows"][f"0/{r['run']}"]["variants"][vid]
    assert sorted(v[4]["rel_l1"], reverse=True) == pytest.approx(l1, rel=1e-5)


def test_feature_change_view(browser, fc):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    d, ex = browser, fc["ex"]
    _open(d, ex.url)
    d.get_log("browser")
    _wait(d, "document.querySelectorAll('[data-stem=feature_change_heatmap] rect.cell[data-vid]').length > 0")
    cell = d.find_element(By.CSS_SELECTOR, "[data-stem=feature_change_heatmap] rect.cell[data-vid]")
    ActionChains(d).move_to_element(cell).perform()
    _wait(d, "!document.getElementById('tip').hidden")
    tip = d.execute_script("return document.getElementById('tip').textContent")
    assert "mean relative L1 change" in tip and "sd" in tip and "n = 3" in tip
    cell.click()
    _wait(d, "document.querySelector('.detail table.rows') !== null")
    assert d.execute_script("return document.querySelectorAll('.detail table.rows tr').length") == 1 + 3
    assert d.execute_script("return document.querySelectorAll('.detail img').length") == 0
    assert "No images for this point" in d.execute_script("return document.querySelector('.detail').textContent")
    vals = d.execute_script("return Array.from(document.querySelectorAll('.detail table.rows tr')).slice(1)"
                            ".map(r => +r.children[3].textContent)")
    assert vals == sorted(vals, reverse=True)  # worst (largest change) first
    d.find_element(By.ID, "f-seeds").send_keys("0-1")  # the filter redraws from the statistic's rows: 2 samples a point
    d.find_element(By.ID, "f-apply").click()
    _wait(d, "/filtered: 2 of 3 samples per point/.test(document.querySelector('.filters .note').textContent)")
    d.execute_script("document.querySelector('[data-stem=feature_change_units] circle.pt').dispatchEvent(new MouseEvent('click'))")
    _wait(d, "document.querySelector('.detail h3') && /^E\\[0\\], t = /.test(document.querySelector('.detail h3').textContent) && "
             "document.querySelectorAll('.detail table.rows tr').length === 3")
    assert _errors(d) == []
