"""The web console: one static single-page app served at `/` (contract.md "HTTP").

No build step and no CDN (the police network is closed): plain HTML, CSS and JavaScript modules
under `static/`, kept flat because package-data ships `static/*` only. The page itself needs no
token; every API call it makes carries `Authorization: Bearer`. We serve the files ourselves
instead of `add_static` so the content types do not depend on the host's /etc/mime.types (a
module script with the wrong type is refused by the browser), and so every response carries a
strict Content-Security-Policy and `Referrer-Policy: no-referrer` (stream URLs hold the token).
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_PREFIX = "/console/static/"

CONTENT_TYPES = {
    ".html": "text/html",
    ".css": "text/css",
    ".js": "text/javascript",  # RFC 9239
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".json": "application/json",
}

# Everything from our own origin; blob:/data: for the video element and the inline icon;
# media and snapshots come from /live on the same origin.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}

routes = web.RouteTableDef()


_cache: dict[Path, bytes] = {}


def _file_response(path: Path) -> web.Response:
    """The file from memory (read once: a few small files, so no disk I/O on the loop after that)."""
    content_type = CONTENT_TYPES.get(path.suffix)
    if content_type is None:
        raise web.HTTPNotFound()
    body = _cache.get(path)
    if body is None:
        if not path.is_file():
            raise web.HTTPNotFound()
        body = _cache[path] = path.read_bytes()
    charset = "utf-8" if content_type.startswith("text/") or content_type.endswith(("json", "xml")) else None
    return web.Response(body=body, content_type=content_type, charset=charset, headers=HEADERS)


@routes.get("/")
async def index(request: web.Request) -> web.Response:
    """The single page; views are chosen by the URL fragment (#devices, #live/ID, ...)."""
    return _file_response(STATIC_DIR / "index.html")


@routes.get(STATIC_PREFIX + "{name}")
async def static(request: web.Request) -> web.Response:
    """One flat file from static/; anything with a path separator or a leading dot is 404."""
    name = request.match_info["name"]
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise web.HTTPNotFound()
    path = (STATIC_DIR / name).resolve()
    if path.parent != STATIC_DIR:
        raise web.HTTPNotFound()
    return _file_response(path)
