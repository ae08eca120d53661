"""The shop as a web app: Starlette routes around :class:`~cmat_gym.domains.web.shop.Shop`, served by
uvicorn on a loopback port.

``GET /{sid}/...`` returns the HTML page (the shop's routes); the env's own API, JSON, is
``POST /api/sessions/{sid}`` (start an episode: ``{"instruction", "goal"}``), ``DELETE
/api/sessions/{sid}`` (end it) and ``GET /api/sessions/{sid}/quote`` (what buying now would score;
query parameters override chosen options); ``GET /api/stats`` counts live sessions. :class:`ShopServer` runs uvicorn in a thread bound to
127.0.0.1 only (the design's security model: nothing off the machine reaches it) and stops it
cleanly: ``close()`` is idempotent and joins the thread, so tests leak no thread and no port.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from cmat_gym.domains.web.shop import SESSION_ID, Shop, page_html

MAX_BODY_BYTES = 64 * 1024
LOOPBACK = "127.0.0.1"


def create_app(shop: Shop | None = None) -> Starlette:
    """The ASGI app serving ``shop`` (a new one by default)."""
    shop = shop if shop is not None else Shop()

    async def page(request: Request) -> Response:
        url = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        view = shop.get(url)
        status = 404 if view.name == "error" else 200
        return HTMLResponse(page_html(view), status_code=status)

    async def home(request: Request) -> Response:
        return HTMLResponse("<!doctype html><title>WebShop</title><p>WebShop (cmat-gym). Episodes are started "
                            "by the environment: POST /api/sessions/{sid}, then open /{sid}.</p>")

    async def session(request: Request) -> Response:
        sid = request.path_params["sid"]
        if not SESSION_ID.fullmatch(sid):
            return JSONResponse({"error": "bad session id"}, status_code=400)
        if request.method == "DELETE":
            shop.end(sid)
            return JSONResponse({"ok": True})
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return JSONResponse({"error": f"body over {MAX_BODY_BYTES} bytes"}, status_code=413)
        try:
            data = json.loads(body)
            shop.start(sid, str(data["instruction"]), dict(data["goal"]))
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse({"error": f"expects {{'instruction': str, 'goal': object}}: {exc}"}, status_code=400)
        return JSONResponse({"ok": True, "url": f"/{sid}"}, status_code=201)

    async def quote(request: Request) -> Response:
        reward, details = shop.quote(request.path_params["sid"], dict(request.query_params) or None)
        return JSONResponse({"reward": reward, "details": details})

    async def stats(request: Request) -> Response:
        return JSONResponse({"sessions": len(shop)})

    routes = [
        Route("/", home),
        Route("/api/stats", stats),
        Route("/api/sessions/{sid}", session, methods=["POST", "DELETE"]),
        Route("/api/sessions/{sid}/quote", quote),
        Route("/{path:path}", page),
    ]
    app = Starlette(routes=routes)
    app.state.shop = shop
    return app


class ShopServer:
    """uvicorn serving :func:`create_app` on ``127.0.0.1:port`` in a background thread.

    Args:
        shop: the shop to serve (a new one by default).
        port: the port (0: a free one, see :attr:`url`).
    """

    def __init__(self, shop: Shop | None = None, port: int = 0) -> None:
        self.shop = shop if shop is not None else Shop()
        config = uvicorn.Config(create_app(self.shop), host=LOOPBACK, port=port, log_level="warning",
                                lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="webshop-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("the shop's web server did not start")
            time.sleep(0.005)
        self.port = int(self._server.servers[0].sockets[0].getsockname()[1])
        self.url = f"http://{LOOPBACK}:{self.port}"
        self._closed = False

    def close(self) -> None:
        """Stop serving and join the server thread (idempotent)."""
        if getattr(self, "_closed", False):
            return
        self._closed = True
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> ShopServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def main() -> None:
    """Serve the shop on 127.0.0.1 until interrupted (port 0: a free one; the first line printed names
    the URL): ``python -c "from cmat_gym.domains.web.server import main; main()" [port]``."""
    import sys

    server = ShopServer(port=int(sys.argv[1]) if len(sys.argv) > 1 else 8080)
    print(f"WebShop at {server.url} (Ctrl-C to stop)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.close()


if __name__ == "__main__":
    main()
