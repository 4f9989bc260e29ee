"""The local web view (`netspec serve`): edit a spec in the browser and see its diagnostics,
summary table and diagram update as you type. Starlette app, served by uvicorn.

What the page asks for goes through the ordinary front end (netspec.frontend.check_text,
netspec.analyze, netspec.draw) and comes back as data: diagnostics as JSON, the summary
rows and the Graphviz SVG. The page's editor is CodeMirror 6, bundled at build time from npm
into netspec/web/editor.js (editors/web/): it highlights with token rules generated from the
grammar and underlines the diagnostics the server returns; nothing is fetched at run time.

Safety: the server binds 127.0.0.1 only; it reads and writes only the files it was started
on, addressed by their index (no path ever comes from a request); it refuses requests whose
Host or Origin is not this server (other sites, DNS rebinding), and writes only JSON bodies
from its own origin. Nothing in the page evaluates spec text.
"""
from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from netspec.diagnostics import NetspecError
from netspec.frontend import check_text, to_json

HOST = "127.0.0.1"
MAX_TEXT = 2_000_000  # the parser's limit on a spec
POLL_SECONDS = 0.5  # how often files on disk are looked at for changes
_STATIC = {"app.js": "text/javascript", "editor.js": "text/javascript", "app.css": "text/css",
           "index.html": "text/html"}


@dataclass
class SpecFile:
    """One file the server was started on. Bundled specs are opened read-only."""

    path: str
    writable: bool

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


def render_spec(text: str, path: str) -> dict[str, Any]:
    """Everything the page shows for spec text: diagnostics (those of this file carry
    "file": path, the others are in imported files), the summary rows and the diagram (when
    the spec is well-formed)."""
    result = check_text(text, path)
    out: dict[str, Any] = {
        "ok": result.ok, "file": path,
        "diagnostics": [to_json(d) for d in result.diagnostics],
        "rows": [], "svg": None, "title": None, "svg_error": None,
    }
    if result.ok and result.network is not None:
        out.update(_analysis(result.network))
        _add_sources(out["rows"], result.network, path)
    elif result.library is not None:
        out["title"] = f"library: {', '.join(result.library)}"
    return out


def _analysis(net) -> dict[str, Any]:
    import netspec
    from netspec.analysis import rows
    from netspec.analysis.summary import render

    analysis = netspec.analyze(net)
    out: dict[str, Any] = {
        "title": render(analysis).splitlines()[0],
        "rows": [r.to_dict() for r in rows(analysis)],
        "totals": {"params": analysis.totals.count.params, "macs": analysis.totals.macs},
    }
    try:
        out["svg"] = netspec.draw(net).pipe(format="svg").decode("utf-8")
    except Exception as exc:  # noqa: BLE001 - Graphviz missing or failing: say so, go on
        out["svg_error"] = f"no diagram: {type(exc).__name__}: {exc}"[:300]
    return out


_KINDS = {"Function": "function", "Class": "class", "Variable": "variable", "Field": "property"}


def completion_items(text: str, path: str, line: int, column: int) -> list[dict[str, Any]]:
    """The language server's completions (netspec.lsp.completions) as plain data for the
    page's editor; none without lsprotocol (the `lsp` extra)."""
    try:
        from lsprotocol import types as T

        from netspec.lsp import completions
    except ImportError:
        return []
    result = check_text(text, path)
    items = completions(result, text, T.Position(line=line - 1, character=column - 1))
    return [{"label": i.label, "kind": _KINDS.get(i.kind.name if i.kind else "", "text"),
             "detail": i.detail, "apply": i.insert_text or i.label} for i in items]


def _add_sources(rows: list[dict[str, Any]], net, path: str) -> None:
    """Give each row the line and column in this file where it is written: a layer's own
    span, or, for a layer inside a block from another file, the call of its outermost block
    written here; a block's row, its call. The page jumps there when a row or node is
    clicked."""
    spans = {}
    for name, data in net.graph.nodes(data=True):
        frames = [f for f in data.get("path", ()) if f.span is not None and f.span.path == path]
        for frame in frames:
            spans.setdefault(frame.instance, frame.span)
        span = data.get("span")
        if span is not None and span.path == path:
            spans[name] = span
        elif frames:
            spans[name] = frames[0].span
    for row in rows:
        span = spans.get(row["name"])
        if span is not None:
            row["line"], row["column"] = span.line, span.col


# ---- the app -------------------------------------------------------------------------------

def create_app(files: list[SpecFile], port_holder: dict[str, int]) -> Starlette:
    """The Starlette app serving `files`; port_holder["port"] is the bound port (for the
    Host/Origin checks), filled in once the socket is bound."""

    def allowed_hosts() -> set[str]:
        port = port_holder.get("port")
        return {f"127.0.0.1:{port}", f"localhost:{port}"}

    def refuse(request: Request) -> Response | None:
        host = request.headers.get("host", "")
        if host not in allowed_hosts():
            return PlainTextResponse("refused: unknown Host", status_code=403)
        origin = request.headers.get("origin")
        if origin is not None and origin.removeprefix("http://") not in allowed_hosts():
            return PlainTextResponse("refused: another origin", status_code=403)
        if request.method not in ("GET", "HEAD"):
            if origin is None:
                return PlainTextResponse("refused: no Origin", status_code=403)
            if request.headers.get("content-type", "").split(";")[0] != "application/json":
                return PlainTextResponse("refused: JSON bodies only", status_code=415)
        return None

    def spec_file(request: Request) -> SpecFile | None:
        try:
            index = int(request.path_params["index"])
        except ValueError:
            return None
        return files[index] if 0 <= index < len(files) else None

    async def guarded(request: Request, handler) -> Response:
        refusal = refuse(request)
        return refusal if refusal is not None else await handler(request)

    async def static(request: Request) -> Response:
        name = request.path_params.get("name", "index.html")
        if name not in _STATIC:
            return PlainTextResponse("not found", status_code=404)
        body = resources.files("netspec.web").joinpath(name).read_bytes()
        return Response(body, media_type=_STATIC[name],
                        headers={"Content-Security-Policy": _CSP,
                                 "X-Content-Type-Options": "nosniff",
                                 "Cache-Control": "no-store"})

    async def list_files(request: Request) -> Response:
        return JSONResponse([{"index": k, "name": f.name, "path": f.path,
                              "writable": f.writable} for k, f in enumerate(files)])

    async def read(request: Request) -> Response:
        f = spec_file(request)
        if f is None:
            return PlainTextResponse("no such file", status_code=404)
        try:
            text = await asyncio.to_thread(_read, f.path)
        except NetspecError as exc:
            return JSONResponse({"error": str(exc)}, status_code=500)
        return JSONResponse({"text": text, "mtime": _mtime(f.path)})

    async def write(request: Request) -> Response:
        f = spec_file(request)
        if f is None:
            return PlainTextResponse("no such file", status_code=404)
        if not f.writable:
            return JSONResponse({"error": f"{f.name} is a bundled spec: opened read-only"},
                                status_code=403)
        text = await _json_text(request)
        if text is None:
            return JSONResponse({"error": "expected {\"text\": \"...\"}"}, status_code=400)
        await asyncio.to_thread(_write_atomically, f.path, text)
        return JSONResponse({"mtime": _mtime(f.path)})

    async def posted_text(request: Request):
        """(the spec file, the posted {"text": ...}, None), or a refusal response: 404 for a
        file the server was not started on, 400 for a body without text."""
        f = spec_file(request)
        if f is None:
            return None, None, PlainTextResponse("no such file", status_code=404)
        text = await _json_text(request)
        if text is None:
            return f, None, JSONResponse({"error": "expected {\"text\": \"...\"}"},
                                         status_code=400)
        return f, text, None

    async def check(request: Request) -> Response:
        f, text, refusal = await posted_text(request)
        if refusal is not None:
            return refusal
        try:
            body = await asyncio.to_thread(render_spec, text, _display(f.path))
        except NetspecError as exc:
            body = {"ok": False, "file": _display(f.path),
                    "diagnostics": [to_json(d) for d in exc.diagnostics], "rows": [],
                    "svg": None}
        return JSONResponse(body)

    async def format_(request: Request) -> Response:
        """The text in `netspec fmt`'s style; a spec that does not parse is refused with
        its diagnostics (the page leaves the text as it is)."""
        from netspec.fmt import format_text

        f, text, refusal = await posted_text(request)
        if refusal is not None:
            return refusal
        try:
            formatted = await asyncio.to_thread(format_text, text, _display(f.path))
        except NetspecError as exc:
            return JSONResponse({"error": exc.diagnostics[0].message if exc.diagnostics
                                 else str(exc)}, status_code=422)
        return JSONResponse({"text": formatted})

    async def complete(request: Request) -> Response:
        """Completions at a 1-based line and column of the text: the language server's (op,
        block and tensor names; argument names inside a call)."""
        f = spec_file(request)
        if f is None:
            return PlainTextResponse("no such file", status_code=404)
        try:
            body = await request.json()
            text, line, column = body["text"], int(body["line"]), int(body["column"])
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "expected {\"text\", \"line\", \"column\"}"},
                                status_code=400)
        if not isinstance(text, str) or len(text) > MAX_TEXT or line < 1 or column < 1:
            return JSONResponse({"error": "bad text or position"}, status_code=400)
        items = await asyncio.to_thread(completion_items, text, _display(f.path), line, column)
        return JSONResponse({"items": items})

    async def events(request: Request) -> Response:
        async def stream():
            seen = {k: _mtime(f.path) for k, f in enumerate(files)}
            yield "retry: 1000\n\n"
            while not await request.is_disconnected():
                await asyncio.sleep(POLL_SECONDS)
                for k, f in enumerate(files):
                    now = _mtime(f.path)
                    if now != seen[k]:
                        seen[k] = now
                        yield f"event: changed\ndata: {json.dumps({'index': k, 'mtime': now})}\n\n"
        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})

    def route(path, handler, methods=("GET",)):
        async def endpoint(request: Request) -> Response:
            return await guarded(request, handler)
        return Route(path, endpoint, methods=list(methods))

    return Starlette(routes=[
        route("/", static),
        route("/static/{name}", static),
        route("/api/files", list_files),
        route("/api/files/{index}", read),
        route("/api/files/{index}", write, methods=("PUT",)),
        route("/api/files/{index}/check", check, methods=("POST",)),
        route("/api/files/{index}/format", format_, methods=("POST",)),
        route("/api/files/{index}/complete", complete, methods=("POST",)),
        route("/api/events", events),
    ])


# Scripts and styles only from this server; the diagram's SVG is inserted as markup after
# the page removes scripts, event attributes and links from it.
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'")


async def _json_text(request: Request) -> str | None:
    try:
        body = await request.json()
    except ValueError:
        return None
    text = body.get("text") if isinstance(body, dict) else None
    if not isinstance(text, str) or len(text) > MAX_TEXT:
        return None
    return text


def _read(path: str) -> str:
    from netspec.files import read_spec_text

    return read_spec_text(path)


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime_ns / 1e9
    except OSError:
        return None


def _display(path: str) -> str:
    rel = os.path.relpath(path)
    return rel if not rel.startswith("..") else path


def _write_atomically(path: str, text: str) -> None:
    tmp = f"{path}.serve.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def spec_files(names: list[str]) -> list[SpecFile]:
    """The files to serve: paths (writable), or bundled spec names (read-only)."""
    from netspec.specfiles import resolve

    out = []
    for name in names:
        path = os.path.abspath(resolve(name))
        bundled = not os.path.isfile(name)
        out.append(SpecFile(path, writable=not bundled and os.access(path, os.W_OK)))
    return out


def serve(files: list[SpecFile], port: int = 0, open_browser: bool = True,
          announce=print) -> None:
    """Serve until interrupted. port 0 picks a free port."""
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, port))
    sock.listen(128)  # connections wait in the backlog until uvicorn accepts them
    holder = {"port": sock.getsockname()[1]}
    url = f"http://{HOST}:{holder['port']}/"
    app = create_app(files, holder)
    config = uvicorn.Config(app, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    announce(f"netspec serve: {url} ({', '.join(f.name for f in files)}); Ctrl-C stops it")
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    server.run(sockets=[sock])
