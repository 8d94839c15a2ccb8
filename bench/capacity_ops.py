#!/usr/bin/env python3
"""What one request of each kind costs the store and the app, for the capacity model in
docs/capacity.md: store commands and round-trips per request, store server CPU per request
(Redis's INFO cpu, memcached's rusage), bytes on the wire, and the app server's CPU per
request (/proc/<pid>/stat), over wrk runs whose request count wrk reports.

Kinds, on the benchmark server (`target/release/bench`):

  read   GET /read with the cookie of an existing session (load, no save)
  write  GET /counter with the cookie of an existing session (load, change `foo`, save)
  new    GET /counter without a cookie (a first visit: the session is created)
  stale  GET /counter with a well-formed id the store does not know (an expired
         session: the load misses, a new session is created)

Each kind runs in two shapes (`--shapes`): one app worker with 32 requests in flight, whose
store commands share its connection's reads and writes (the cheapest case for the store); and
16 workers with one request each, so that each command reaches the store alone, as on a store
that many app instances share, each with a few commands in flight per connection.

Then, for Redis, it replays the commands the app sent (the same arguments, the save script
called by its SHA) with redis-benchmark, 50 connections, no pipelining: what each command
costs a Redis that is busy and gets its commands one per read.

With `--fill N` it fills fresh servers with N sessions of 5 keys (those of
bench/src/bin/capacity.rs) and reports memory per session at that scale: Redis standalone and
in Cluster mode (one node holding every slot), through the save script's create replayed by
redis-benchmark; memcached through `ms` as the store sends it, with its slab class and hash
table. `--rounds 0 --fill 1000000` runs only that.

It starts its own redis-server and memcached on free loopback ports (wrk and the stores on
core 1, the app and redis-benchmark on core 0, as bench/run.py) and stops them by PID. Stdlib
only.

    cargo build --release -q -p bench --bins
    python3 bench/capacity_ops.py --rounds 5 --seconds 5
    python3 bench/capacity_ops.py --rounds 0 --fill 1000000
"""
import argparse
import atexit
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER = os.path.join(ROOT, "target", "release", "bench")
LUA = os.path.join(ROOT, "bench", "wrk", "sessions.lua")
SAVE_SCRIPT = os.path.join(ROOT, "session", "src", "storage", "redis", "save.lua")
TICK = os.sysconf("SC_CLK_TCK")
# The middleware's default TTL (30 days), as the store sends it to Redis.
TTL_MS = str(30 * 24 * 3600 * 1000)

# (route, which cookies the requests carry: "live", "none" or "unknown")
KINDS = {
    "read": ("/read", "live"),
    "write": ("/counter", "live"),
    "new": ("/counter", "none"),
    "stale": ("/counter", "unknown"),
}
# The benchmark server's kind for each store: the Redis hash layout, and memcached.
STORES = {"redis": "ours-redis", "memcached": "ours-memcached", "redis-near": "ours-redis-near"}
# Commands the app sends to Redis, each one round-trip; every other command in INFO
# commandstats ran inside the save script (session/src/storage/redis/save.lua). (The app
# also sends GET and DEL, for a renewed or purged session, which these requests are not.)
REDIS_CLIENT_COMMANDS = {"hgetall", "evalsha", "eval", "script|load", "pttl", "client|tracking"}
# memcached's counters of commands, each one round-trip (the store sends no `mn` per
# request): `mg` counts as a get, or as a touch when it carries `T`; `ms` as a set; `md` as
# a delete.
MEMCACHED_COMMANDS = ("cmd_get", "cmd_set", "cmd_touch", "delete_hits", "delete_misses")
MEMCACHED_DETAIL = ("get_hits", "get_misses", "cas_hits", "cas_misses", "cas_badval",
                    "touch_hits", "touch_misses")
# A session of 5 keys, as bench/src/bin/capacity.rs writes it: (field, JSON value).
FIVE_KEYS = [("user", '"ada@example.com"'), ("visits", "42"),
             ("cart.items", '["apple","pear"]'), ("pref.3", '"dark"'), ("pref.4", '"dark"')]
# A new id per command for redis-benchmark: 20 zeros and its 12-digit __rand_int__.
RANDOM_KEY = "session:" + "0" * 20 + "__rand_int__"

processes = []  # every process started here, stopped by PID at exit


def save_script_sha():
    with open(SAVE_SCRIPT, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


def create_command(key, fields):
    """The save script's create of a session of `fields` at `key`, as the store sends it
    (`fill` in session/src/storage/redis.rs, seen with MONITOR): five arguments per field."""
    changes = [arg for field, value in fields for arg in (field, "s", value, "0", "")]
    return (["EVALSHA", save_script_sha(), "1", key, "c", "0", TTL_MS, "300000",
             str(len(fields))] + changes)


def stop_all():
    for proc in processes:
        if proc.poll() is None:
            proc.terminate()
    for proc in processes:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


atexit.register(stop_all)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
signal.signal(signal.SIGINT, lambda *_: sys.exit(1))


# ---- processes ----

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(cpu, argv):
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(cpu)] + argv
    return argv


def start(argv, cpu, env=None, cwd=None):
    proc = subprocess.Popen(pinned(cpu, argv), env={**os.environ, **(env or {})}, cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    processes.append(proc)
    return proc


def stop(proc):
    proc.terminate()
    proc.wait()
    processes.remove(proc)


def wait_port(port, proc, name):
    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{name} exited at start-up with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{name} did not listen on {port}")


def start_redis(tmp, cluster=False):
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", tmp]
    if cluster:
        argv += ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf"]
    proc = start(argv, cpu=1, cwd=tmp)
    wait_port(port, proc, "redis-server")
    with open(SAVE_SCRIPT, "rb") as f:
        script = f.read()
    if redis_call(port, "SCRIPT", "LOAD", script) != save_script_sha():
        sys.exit("SCRIPT LOAD did not answer the save script's SHA-1")
    return port, proc


def start_memcached(tmp, megabytes):
    port = free_port()
    argv = ["memcached", "-p", str(port), "-l", "127.0.0.1", "-U", "0", "-m", str(megabytes)]
    if os.geteuid() == 0:
        argv += ["-u", "root"]
    proc = start(argv, cpu=1, cwd=tmp)
    wait_port(port, proc, "memcached")
    return port, proc


def cpu_seconds(pid):
    """User plus system CPU time of a process and all its threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1)) * 1024


# ---- the stores' counters ----

def redis_call(port, *args, db=None):
    """Sends one command (in database `db`, when given); its answer as text: a bulk string's
    content, or the status, error or integer line."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        arg = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    with socket.create_connection(("127.0.0.1", port)) as s:
        if db is not None:
            s.sendall(b"*2\r\n$6\r\nSELECT\r\n$%d\r\n%d\r\n" % (len(str(db)), db))
            selected = b""
            while not selected.endswith(b"\r\n"):
                selected += s.recv(1)
            if selected != b"+OK\r\n":
                sys.exit(f"SELECT {db} answered {selected!r}")
        s.sendall(b"".join(parts))
        data = b""
        while True:
            data += s.recv(65536)
            head, _, body = data.partition(b"\r\n")
            if head[:1] in (b"+", b"-", b":") and _ or head == b"$-1":
                return head.decode()
            if head.startswith(b"$") and len(body) >= int(head[1:]) + 2:
                return body[:int(head[1:])].decode()


def redis_info(port):
    """INFO's fields the model needs, and commandstats as {command: (calls, usec)}."""
    fields, commands = {}, {}
    for line in redis_call(port, "INFO", "commandstats", "cpu", "stats", "memory").splitlines():
        name, sep, value = line.partition(":")
        if not sep:
            continue
        if name.startswith("cmdstat_"):
            stat = dict(pair.split("=") for pair in value.split(","))
            commands[name[len("cmdstat_"):]] = (int(stat["calls"]), int(stat["usec"]))
        else:
            fields[name] = value
    return fields, commands


def memcached_call(port, command, end=b"END\r\n"):
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(command)
        data = b""
        while not data.endswith(end):
            data += s.recv(65536)
    return data.decode()


def memcached_stats(port):
    stats = {}
    for line in memcached_call(port, b"stats\r\n").splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "STAT":
            stats[parts[1]] = parts[2]
    return stats


class RedisCounters:
    def __init__(self, port):
        self.port = port

    def snapshot(self):
        return redis_info(self.port)

    def delta(self, before, after, requests):
        (f0, c0), (f1, c1) = before, after
        zero = (0, 0)
        per = {cmd: (c1[cmd][0] - c0.get(cmd, zero)[0]) / requests for cmd in c1}
        per = {cmd: v for cmd, v in per.items() if cmd != "info" and v > 0}
        # The client's commands' own time, which includes the commands a script runs.
        usec = sum(c1[cmd][1] - c0.get(cmd, zero)[1] for cmd in c1
                   if cmd in REDIS_CLIENT_COMMANDS)
        cpu = sum(float(f1[k]) - float(f0[k]) for k in ("used_cpu_user", "used_cpu_sys"))

        def per_request(field):
            return (int(f1[field]) - int(f0[field])) / requests

        return {
            "commands": per,
            "round_trips": sum(v for cmd, v in per.items() if cmd in REDIS_CLIENT_COMMANDS),
            "store_us": cpu * 1e6 / requests,
            "command_us": usec / requests,
            # Reads of a socket: how many commands arrive together.
            "store_reads": per_request("total_reads_processed"),
            "bytes_in": per_request("total_net_input_bytes"),
            "bytes_out": per_request("total_net_output_bytes"),
            "memory": per_request("used_memory"),
        }


class MemcachedCounters:
    def __init__(self, port):
        self.port = port

    def snapshot(self):
        return memcached_stats(self.port)

    def delta(self, before, after, requests):
        def per_request(field):
            return (int(after[field]) - int(before[field])) / requests

        cpu = sum(float(after[k]) - float(before[k]) for k in ("rusage_user", "rusage_system"))
        commands = {k: per_request(k) for k in MEMCACHED_COMMANDS + MEMCACHED_DETAIL
                    if per_request(k) > 0}
        return {
            "commands": commands,
            "round_trips": sum(per_request(k) for k in MEMCACHED_COMMANDS),
            "store_us": cpu * 1e6 / requests,
            "command_us": None,
            "store_reads": None,
            "bytes_in": per_request("bytes_read"),
            "bytes_out": per_request("bytes_written"),
            "memory": per_request("bytes"),
        }


# ---- requests through the app ----

def http_cookie(port):
    """A new session's cookie, from a first visit to /counter."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/counter", timeout=10) as res:
        for header in res.headers.get_all("Set-Cookie") or []:
            pair = header.split(";", 1)[0]
            if pair.startswith("session="):
                return pair
    sys.exit(f"no session cookie from port {port}")


def wrk(port, route, cookies_file, seconds, connections):
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s"]
    env = dict(os.environ)
    if cookies_file:
        argv += ["-s", LUA]
        env.update(COOKIES=cookies_file, WRK_PATH=route)
    argv.append(f"http://127.0.0.1:{port}{route}")
    out = subprocess.run(pinned(1, argv), env=env, capture_output=True, text=True,
                         check=True).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    # A 503 is a store that answered later than the store's timeout: on a loaded machine,
    # a few per run; the table counts them.
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return (requests, float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            int(errors.group(1)) if errors else 0)


def measure(counters, server, route, cookies_file, seconds, connections):
    """One wrk run, with the store's and the app's counters read before and after."""
    before, app_before = counters.snapshot(), cpu_seconds(server["pid"])
    requests, rps, errors = wrk(server["port"], route, cookies_file, seconds, connections)
    after, app_after = counters.snapshot(), cpu_seconds(server["pid"])
    result = counters.delta(before, after, requests)
    result.update(requests=requests, rps=rps, errors=errors,
                  app_us=(app_after - app_before) * 1e6 / requests)
    return result


def idle_cpu(counters, seconds):
    """The store's CPU per second with no requests (its timers), to compare with a run's."""
    first, t0 = counters.snapshot(), time.time()
    time.sleep(seconds)
    last, elapsed = counters.snapshot(), time.time() - t0
    return counters.delta(first, last, 1)["store_us"] / elapsed


# ---- Redis replay ----

def replays(live_key, unknown_key, five_keys_key):
    """The commands the app sends, as redis-benchmark arguments, each under a name; and the
    requests they make up. The arguments are those the store sends, as MONITOR shows them: a
    write of `foo` takes the save script's fast path ('f'), a new session its create ('c')."""
    sha = save_script_sha()
    commands = {
        "HGETALL, a session": ["HGETALL", live_key],
        "HGETALL, no session": ["HGETALL", unknown_key],
        "HGETALL, a session of 5 keys": ["HGETALL", five_keys_key],
        "EVALSHA 'f' (write)": ["EVALSHA", sha, "1", live_key, "f", TTL_MS, "foo", "2"],
        "EVALSHA 'c' (create)": ["-r", "2000000000"] + create_command(RANDOM_KEY, [("foo", "1")]),
        # Not sent by the app: what the write's two commands cost without the script.
        "HSET alone": ["HSET", live_key, "foo", "2"],
        "PEXPIRE alone": ["PEXPIRE", live_key, TTL_MS],
    }
    kinds = {
        "read": ["HGETALL, a session"],
        "write": ["HGETALL, a session", "EVALSHA 'f' (write)"],
        "new": ["EVALSHA 'c' (create)"],
        "stale": ["HGETALL, no session", "EVALSHA 'c' (create)"],
        "write, HSET and PEXPIRE without the script": ["HGETALL, a session", "HSET alone",
                                                       "PEXPIRE alone"],
    }
    return commands, kinds


def replay(port, args, count, db):
    """redis-benchmark `count` times: Redis's CPU per command, and the commands it ran."""
    argv = ["redis-benchmark", "-p", str(port), "--dbnum", str(db), "-c", "50", "-n",
            str(count), "-q"] + args
    counters = RedisCounters(port)
    before = counters.snapshot()
    subprocess.run(pinned(0, argv), capture_output=True, check=True)
    after = counters.snapshot()
    result = counters.delta(before, after, count)
    # The time commandstats gives the command sent (a script's commands included).
    name = next(a for a in args if not a.startswith("-") and not a.isdigit()).lower()
    result["command_us"] = (after[1][name][1] - before[1].get(name, (0, 0))[1]) / count
    return result


def start_replica(tmp, primary_port):
    """A replica of the Redis at `primary_port`, once in sync."""
    folder = tempfile.mkdtemp(prefix="replica-", dir=tmp)
    port = free_port()
    proc = start(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                  "--appendonly", "no", "--dir", folder, "--replicaof", "127.0.0.1",
                  str(primary_port)], cpu=0, cwd=folder)
    wait_port(port, proc, "redis-server (replica)")
    deadline = time.time() + 60
    while "master_link_status:up" not in redis_call(port, "INFO", "replication"):
        if time.time() > deadline:
            sys.exit("the replica did not sync")
        time.sleep(0.1)
    return port, proc


def replay_replicated(port, replica_port, args, count, db):
    """`replay` on a primary with a replica: both servers' CPU per command."""
    replica = RedisCounters(replica_port)
    before = replica.snapshot()
    result = replay(port, args, count, db)
    # The replica may still be applying the last commands.
    time.sleep(0.5)
    result["replica_us"] = replica.delta(before, replica.snapshot(), count)["store_us"]
    return result


# ---- memory at scale ----

def fill_redis(tmp, count, cluster):
    """A fresh redis-server filled with `count` 5-key sessions by the save script's create:
    used_memory and resident memory per session."""
    port, proc = start_redis(tmp, cluster)
    if cluster:
        answer = redis_call(port, "CLUSTER", "ADDSLOTSRANGE", "0", "16383")
        if answer != "+OK":
            sys.exit(f"CLUSTER ADDSLOTSRANGE answered {answer!r}")
        while "cluster_state:ok" not in redis_call(port, "CLUSTER", "INFO"):
            time.sleep(0.1)
    argv = (["redis-benchmark", "-p", str(port), "-c", "50", "-n", str(count), "-q",
             "-r", "2000000000"] + create_command(RANDOM_KEY, FIVE_KEYS))
    before, rss_before = redis_info(port)[0], rss_bytes(proc.pid)
    subprocess.run(pinned(0, argv), capture_output=True, check=True)
    after, rss_after = redis_info(port)[0], rss_bytes(proc.pid)
    # Random ids collide now and then: count the sessions stored.
    sessions = int(re.search(r"keys=(\d+)", redis_call(port, "INFO", "keyspace")).group(1))
    usage = redis_call(port, "MEMORY", "USAGE", redis_call(port, "RANDOMKEY"), "SAMPLES", "0")
    stop(proc)
    return {"sessions": sessions,
            "used_memory": (int(after["used_memory"]) - int(before["used_memory"])) / sessions,
            "rss": (rss_after - rss_before) / sessions, "memory_usage": int(usage.lstrip(":"))}


def fill_memcached(tmp, count):
    """A fresh memcached filled with `count` 5-key sessions, written as the store writes them
    (`ms KEY SIZE T<exptime>`, the JSON map): memory per session, the slab class, the hash
    table."""
    port, proc = start_memcached(tmp, 4096)
    value = ("{" + ",".join(f'"{k}":{v}' for k, v in FIVE_KEYS) + "}").encode()
    before, rss_before = memcached_stats(port), rss_bytes(proc.pid)
    with socket.create_connection(("127.0.0.1", port)) as s:
        for first in range(0, count, 1000):
            batch = (b"ms session:%s %d T2592000 q\r\n%s\r\n"
                     % (secrets.token_hex(16).encode(), len(value), value)
                     for _ in range(min(1000, count - first)))
            # Quiet sets answer nothing unless they fail; `mn` ends the batch.
            s.sendall(b"".join(batch) + b"mn\r\n")
            data = b""
            while not data.endswith(b"MN\r\n"):
                data += s.recv(65536)
            if data != b"MN\r\n":
                sys.exit(f"memcached answered {data[:200]!r}")
    # memcached grows its hash table in a thread of its own: wait for it.
    while memcached_stats(port).get("hash_is_expanding") != "0":
        time.sleep(0.2)
    slabs = memcached_call(port, b"stats slabs\r\n")
    after, rss_after = memcached_stats(port), rss_bytes(proc.pid)
    stop(proc)
    chunk_size = dict(re.findall(r"STAT (\d+):chunk_size (\d+)", slabs))
    chunks = [chunk_size[c] for c, n in re.findall(r"STAT (\d+):used_chunks (\d+)", slabs)
              if int(n) > 0]
    items = int(after["curr_items"]) - int(before["curr_items"])
    return {"sessions": items, "value": len(value),
            "item": (int(after["bytes"]) - int(before["bytes"])) / items,
            "chunks": chunks, "hash": int(after["hash_bytes"]) / items,
            "rss": (rss_after - rss_before) / items}


# ---- reports ----

def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, digits):
    return "" if value is None else f"{value:.{digits}f}"


def spread(values, digits):
    """The median, with the lowest and highest value from three runs on."""
    values = [v for v in values if v is not None]
    if not values:
        return ""
    m = statistics.median(values)
    if len(values) < 3:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def report(args, runs):
    print(f"\nMedians of {args.rounds} runs of {args.seconds} s per shape, store and kind (wrk, "
          f"1 thread), CPU with the lowest and highest run; {args.sessions} live sessions.\n")
    print("| workers x conns | store | kind | requests per run | app CPU µs/req | store CPU "
          "µs/req | Redis command µs/req | round-trips /req | store socket reads /req | bytes "
          "to store /req | bytes from store /req | store memory growth B/req | non-2xx |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for ((workers, conns), store, kind), rs in runs.items():
        m = {k: median([r[k] for r in rs]) for k in
             ("requests", "command_us", "round_trips", "store_reads", "bytes_in", "bytes_out",
              "memory")}
        print(f"| {workers}x{conns} | {store} | {kind} | {m['requests']:.0f} | "
              f"{spread([r['app_us'] for r in rs], 1)} | "
              f"{spread([r['store_us'] for r in rs], 2)} | {fmt(m['command_us'], 2)} | "
              f"{m['round_trips']:.3f} | {fmt(m['store_reads'], 3)} | {m['bytes_in']:.0f} | "
              f"{m['bytes_out']:.0f} | {m['memory']:.0f} | {sum(r['errors'] for r in rs)} |")
    print("\n| workers x conns | store | kind | commands per request (medians) |")
    print("|---|---|---|---|")
    for ((workers, conns), store, kind), rs in runs.items():
        names = sorted({name for r in rs for name in r["commands"]})
        text = ", ".join(f"{name} {median([r['commands'].get(name, 0) for r in rs]):.3f}"
                         for name in names)
        print(f"| {workers}x{conns} | {store} | {kind} | {text} |")


def report_replay(args, replayed, kinds, replicated):
    rounds = list(replayed.values())
    print(f"\nRedis replay: redis-benchmark, 50 connections, no pipelining, "
          f"{args.replay_count} commands per command and round, {len(rounds)} rounds; "
          f"redis-server CPU (INFO cpu) per command, median (lowest–highest).\n")
    print("| command | Redis CPU µs/command | Redis command µs/command (commandstats) | "
          "commands it ran |")
    print("|---|---:|---:|---|")
    for name in rounds[0]:
        rs = [r[name] for r in rounds]
        ran = ", ".join(f"{cmd} {median([r['commands'].get(cmd, 0) for r in rs]):.2f}"
                        for cmd in sorted({c for r in rs for c in r["commands"]})
                        if cmd not in ("select", "config|get"))
        print(f"| {name} | {spread([r['store_us'] for r in rs], 2)} | "
              f"{spread([r['command_us'] for r in rs], 2)} | {ran} |")
    if replicated:
        print("\nThe saves on a primary with one replica (same replay):\n")
        print("| command | primary CPU µs/command | replica CPU µs/command |")
        print("|---|---:|---:|")
        for name in list(replicated.values())[0]:
            rs = [r[name] for r in replicated.values()]
            print(f"| {name} | {spread([r['store_us'] for r in rs], 2)} | "
                  f"{spread([r['replica_us'] for r in rs], 2)} |")
    print("\n| kind | commands | Redis CPU µs/request (sum of the medians) |")
    print("|---|---|---:|")
    for kind, parts in kinds.items():
        total = sum(median([r[name]["store_us"] for r in rounds]) for name in parts)
        print(f"| {kind} | {' + '.join(parts)} | {total:.2f} |")


def report_fill(tmp, count):
    print(f"\nMemory per session at {count} sessions of 5 keys, each server fresh.\n")
    print("| store | sessions | used_memory growth B/session | resident memory growth "
          "B/session | MEMORY USAGE of one session |")
    print("|---|---:|---:|---:|---:|")
    for name, cluster in (("Redis, standalone", False), ("Redis, Cluster mode", True)):
        r = fill_redis(tmp, count, cluster)
        print(f"| {name} | {r['sessions']} | {r['used_memory']:.0f} | {r['rss']:.0f} | "
              f"{r['memory_usage']} |", flush=True)
    m = fill_memcached(tmp, count)
    print("\n| store | sessions | JSON bytes | item bytes (`bytes`) | slab chunk | hash table "
          "B/session (`hash_bytes`) | resident memory growth B/session |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(f"| memcached | {m['sessions']} | {m['value']} | {m['item']:.0f} | "
          f"{', '.join(m['chunks'])} | {m['hash']:.1f} | {m['rss']:.0f} |")


# ---- main ----

def measure_requests(args, tmp):
    """The request kinds' runs and the Redis replay, with their tables."""
    if not os.access(SERVER, os.X_OK):
        sys.exit(f"{SERVER} missing: cargo build --release -q -p bench --bins")
    redis_port, _ = start_redis(tmp)
    memcached_port, _ = start_memcached(tmp, 2048)
    counters = {"redis": RedisCounters(redis_port), "memcached": MemcachedCounters(memcached_port),
                "redis-near": RedisCounters(redis_port)}
    env = {
        "redis": {"REDIS_URL": f"redis://127.0.0.1:{redis_port}/1"},
        "memcached": {"MEMCACHED_ADDR": f"127.0.0.1:{memcached_port}"},
        # The near cache (RESP3 client tracking), on a database of its own.
        "redis-near": {"REDIS_URL": f"redis://127.0.0.1:{redis_port}/2"},
    }
    stores = args.stores.split(",")
    shapes = [tuple(int(n) for n in shape.split("x")) for shape in args.shapes.split(",")]

    files, servers = {}, {}
    for store in stores:
        for workers in dict.fromkeys(w for w, _ in shapes):
            port = free_port()
            proc = start([SERVER, STORES[store]], cpu=0,
                         env={**env[store], "BIND_ADDR": f"127.0.0.1:{port}",
                              "WORKERS": str(workers)})
            wait_port(port, proc, store)
            servers[(store, workers)] = {"port": port, "pid": proc.pid}
        live, unknown = os.path.join(tmp, f"live-{store}"), os.path.join(tmp, f"unknown-{store}")
        port = servers[(store, shapes[0][0])]["port"]
        with open(live, "w") as f:
            f.write("\n".join(http_cookie(port) for _ in range(args.sessions)) + "\n")
        with open(unknown, "w") as f:
            f.write("\n".join(f"session={secrets.token_hex(16)}" for _ in range(args.sessions))
                    + "\n")
        files[store] = {"live": live, "none": None, "unknown": unknown}
    # Untimed requests of each kind on each server: connections opened, the script loaded.
    for (store, workers), server in servers.items():
        for route, cookies in KINDS.values():
            wrk(server["port"], route, files[store][cookies], 1, 32)

    idle = {store: idle_cpu(counters[store], args.seconds) for store in stores}
    print("idle store CPU, µs per second: "
          + ", ".join(f"{store} {us:.0f}" for store, us in idle.items()), flush=True)

    with_replay = "redis" in stores and args.replay_count > 0
    if with_replay:
        with open(files["redis"]["live"]) as f:
            live_key = "session:" + f.readline().strip().split("=", 1)[1]
        with open(files["redis"]["unknown"]) as f:
            unknown_key = "session:" + f.readline().strip().split("=", 1)[1]
        # The bench's sessions hold one key; a session of 5, created as the store creates it.
        five_keys_key = "session:" + secrets.token_hex(16)
        created = redis_call(redis_port, *create_command(five_keys_key, FIVE_KEYS), db=1)
        if created != "saved":
            sys.exit(f"the save script answered {created!r} to a create")
        replay_commands, replay_kinds = replays(live_key, unknown_key, five_keys_key)

    keys = [(shape, store, kind) for shape in shapes for store in stores for kind in KINDS]
    runs = {key: [] for key in keys}
    replayed = {}
    for round_no in range(args.rounds):
        for (workers, conns), store, kind in keys:
            route, cookies = KINDS[kind]
            result = measure(counters[store], servers[(store, workers)], route,
                             files[store][cookies], args.seconds, conns)
            runs[((workers, conns), store, kind)].append(result)
            print(f"round {round_no + 1} {workers}x{conns:<3} {store:10} {kind:6} "
                  f"{result['requests']:>8} requests {result['rps']:>8.0f} req/s  app "
                  f"{result['app_us']:5.1f} µs  store {result['store_us']:5.2f} µs  "
                  f"round-trips {result['round_trips']:.3f}", flush=True)
        if with_replay:
            replayed[round_no] = {}
            for name, command in replay_commands.items():
                result = replay(redis_port, command, args.replay_count, 1)
                replayed[round_no][name] = result
                print(f"round {round_no + 1} replay {name:28} Redis {result['store_us']:5.2f} "
                      f"µs per command", flush=True)

    replicated = {}
    if with_replay:
        # The saves again, now that the primary feeds a replica (the commands a script ran,
        # wrapped in MULTI/EXEC).
        replica_port, replica = start_replica(tmp, redis_port)
        for round_no in range(args.rounds):
            replicated[round_no] = {}
            for name in ("EVALSHA 'f' (write)", "EVALSHA 'c' (create)"):
                result = replay_replicated(redis_port, replica_port, replay_commands[name],
                                           args.replay_count, 1)
                replicated[round_no][name] = result
                print(f"round {round_no + 1} replay with a replica {name:22} primary "
                      f"{result['store_us']:5.2f} µs, replica {result['replica_us']:5.2f} µs",
                      flush=True)
        stop(replica)

    report(args, runs)
    if replayed:
        report_replay(args, replayed, replay_kinds, replicated)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"idle_us_per_second": idle,
                       "runs": {f"{w}x{c} {store} {kind}": rs
                                for ((w, c), store, kind), rs in runs.items()},
                       "replay": replayed, "replicated": replicated}, f, indent=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5, help="length of one wrk run")
    parser.add_argument("--shapes", default="1x32,16x16",
                        help="comma-separated WORKERSxCONNECTIONS, each run in every round")
    parser.add_argument("--sessions", type=int, default=10_000,
                        help="live sessions the read and write requests pick from (many, so that "
                        "two requests rarely change one session at once)")
    parser.add_argument("--stores", default="redis,memcached",
                        help=f"comma-separated, of {', '.join(STORES)}")
    parser.add_argument("--replay-count", type=int, default=200_000,
                        help="redis-benchmark commands per command and round (0: no replay)")
    parser.add_argument("--fill", type=int, default=0,
                        help="fill fresh servers with this many sessions and report memory per "
                        "session")
    parser.add_argument("--json", help="also write every run's figures to this file")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="capacity-ops-")
    # Registered after stop_all, so run before it: stop the servers, then remove their files.
    atexit.register(lambda: (stop_all(), shutil.rmtree(tmp, True)))
    if args.rounds:
        measure_requests(args, tmp)
    if args.fill:
        report_fill(tmp, args.fill)


if __name__ == "__main__":
    main()
