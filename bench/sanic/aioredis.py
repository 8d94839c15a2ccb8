# sanic-sessions' AIORedisSessionInterface imports `aioredis`, which no longer imports on
# Python 3.11 (its TimeoutError has a duplicate base class). The interface only calls
# get, setex and delete, which redis-py's asyncio client (the successor of aioredis) has
# with the same signatures, so this module stands in for it.
from redis.asyncio import *  # noqa: F401,F403
from redis.asyncio import Redis, from_url  # noqa: F401
