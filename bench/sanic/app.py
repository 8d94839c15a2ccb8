"""The benchmark's Python side: sanic_session's counter on sanic, with the maintained fork
sanic-sessions, on its in-memory or its Redis interface. The same routes as the Rust
servers: /counter, /noop, /read, /stats.

    python app.py memory|redis   (BIND_ADDR=host:port, REDIS_URL=redis://...)
"""
import os
import sys

from sanic import Sanic
from sanic.response import text
from sanic_sessions import AIORedisSessionInterface, InMemorySessionInterface, Session

kind = sys.argv[1]
host, port = os.environ.get("BIND_ADDR", "127.0.0.1:8000").rsplit(":", 1)
app = Sanic("bench")
stats = {"ok": 0}

if kind == "redis":
    import aioredis  # the stand-in beside this file: redis-py's asyncio client

    client = aioredis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"))
    Session(app, interface=AIORedisSessionInterface(client))
else:
    Session(app, interface=InMemorySessionInterface())


@app.get("/counter")
async def counter(request):
    # The seed's example, as its users write it.
    if not request.ctx.session.get("foo"):
        request.ctx.session["foo"] = 0
    request.ctx.session["foo"] += 1
    stats["ok"] += 1
    return text(str(request.ctx.session["foo"]))


@app.get("/read")
async def read(request):
    return text(str(request.ctx.session.get("foo", 0)))


@app.get("/noop")
async def noop(request):
    return text("noop")


@app.get("/stats")
async def get_stats(request):
    return text(str(stats["ok"]))


if __name__ == "__main__":
    app.run(host=host, port=int(port), single_process=True, access_log=False, debug=False, motd=False)
