"""The Python side of examples/tests/sanic.rs: a Sanic app on sanic-sessions (the maintained
fork of sanic_session) sharing a session store with this crate's counter examples.

    python app.py redis|memcached
        BIND_ADDR=host:port (default 127.0.0.1:8000)
        REDIS_URL=redis://...        (redis; default redis://127.0.0.1:6379)
        MEMCACHED_ADDR=host:port     (memcached; default 127.0.0.1:11211)

GET /             increments `foo` as the examples' counter does, answers the new count
POST /login?user= sets `user`
GET /whoami       answers `user=NAME foo=N` from the session (`-` and 0 when unset)

The app prints nothing of its own (Sanic logs two start-up lines to stdout, tracebacks to
stderr): the test waits for the port to accept connections, not for a line.
"""
import os
import sys

# sanic-sessions imports `aioredis` when it is imported, and that package no longer imports
# on Python 3.11+: the benchmark's stand-in (redis-py's asyncio client) must come first.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "bench", "sanic"))

from sanic import Sanic  # noqa: E402
from sanic.response import text  # noqa: E402
from sanic_sessions import AIORedisSessionInterface, MemcacheSessionInterface, Session  # noqa: E402

kind = sys.argv[1] if len(sys.argv) > 1 else ""
host, port = os.environ.get("BIND_ADDR", "127.0.0.1:8000").rsplit(":", 1)
app = Sanic("sanic_round_trip")

if kind == "redis":
    import aioredis  # the stand-in

    client = aioredis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"))
    Session(app, interface=AIORedisSessionInterface(client))
elif kind == "memcached":
    import aiomcache

    mc_host, mc_port = os.environ.get("MEMCACHED_ADDR", "127.0.0.1:11211").rsplit(":", 1)
    Session(app, interface=MemcacheSessionInterface(aiomcache.Client(mc_host, int(mc_port))))
else:
    sys.exit(f"usage: {sys.argv[0]} redis|memcached")


@app.get("/")
async def counter(request):
    session = request.ctx.session
    session["foo"] = session.get("foo", 0) + 1
    return text(str(session["foo"]))


@app.post("/login")
async def login(request):
    user = request.args.get("user")
    if not user:
        return text("user= is missing", status=400)
    request.ctx.session["user"] = user
    return text("logged in")


@app.get("/whoami")
async def whoami(request):
    session = request.ctx.session
    return text(f"user={session.get('user', '-')} foo={session.get('foo', 0)}")


if __name__ == "__main__":
    app.run(
        host=host,
        port=int(port),
        single_process=True,
        access_log=False,
        debug=False,
        motd=False,
    )
