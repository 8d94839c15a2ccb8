#!/usr/bin/env python3
"""Instructions per request, counted by valgrind's callgrind: a repeatable measure of what a
request costs the server, untouched by other tenants' load on a shared machine.

For each server kind and route it runs the server under callgrind twice, sends N1 and then
N2 sequential keep-alive requests, and reports (I(N2) - I(N1)) / (N2 - N1): start-up and
shutdown cancel out. Every request carries the cookie of one session that a first /counter
created, so /read finds `foo` in it (and checks that it does) and /counter updates it.

    bench/callgrind.py [--kinds bare,ours-memory,as-cookie] [--routes /noop,/counter,/read]
                       [--n1 500 --n2 2500]
"""
import argparse
import http.client
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# BENCH_SERVER: another build of the server, to count a change before and after in one run.
SERVER = os.environ.get("BENCH_SERVER") or os.path.join(ROOT, "target", "release", "bench")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"server did not listen on {port}")


def instructions(kind, route, requests, env):
    port = free_port()
    out = tempfile.NamedTemporaryFile(suffix=".callgrind", delete=False).name
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", SERVER, kind],
        env={**os.environ, **env, "BIND_ADDR": f"127.0.0.1:{port}", "WORKERS": "1"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", "/counter")
        res = conn.getresponse()
        stored = res.read()
        cookie = [h.split(";")[0] for h in res.headers.get_all("Set-Cookie") or [] if h.startswith("session=")]
        headers = {"Cookie": cookie[0]} if cookie else {}
        for _ in range(requests):
            conn.request("GET", route, headers=headers)
            r = conn.getresponse()
            body = r.read()
            assert r.status == 200, r.status
            # A /read that found no session would cost less than one that did, unnoticed.
            assert route != "/read" or body == stored, (body, stored)
        conn.close()
    finally:
        proc.terminate()
        proc.wait(timeout=120)
    with open(out) as f:
        text = f.read()
    os.unlink(out)
    match = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M)
    return int(match.group(1))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kinds", default="bare,ours-memory,as-cookie")
    parser.add_argument("--routes", default="/noop,/counter,/read")
    parser.add_argument("--n1", type=int, default=500)
    parser.add_argument("--n2", type=int, default=2500)
    args = parser.parse_args()
    results = {}
    for kind in args.kinds.split(","):
        for route in args.routes.split(","):
            low = instructions(kind, route, args.n1, {})
            high = instructions(kind, route, args.n2, {})
            per = (high - low) / (args.n2 - args.n1)
            results[(kind, route)] = per
            print(f"{kind:16} {route:9} {per:>10.0f} instructions per request", flush=True)
    base = {route: results.get(("bare", route)) for route in args.routes.split(",")}
    for (kind, route), per in results.items():
        if base.get(route) and kind != "bare":
            print(f"{kind:16} {route:9} bare/{kind} = {base[route] / per:.3f}")
    for route in ("/counter", "/read"):
        if ("ours-memory", route) in results and ("as-cookie", route) in results:
            ratio = results[("as-cookie", route)] / results[("ours-memory", route)]
            print(f"as-cookie/ours-memory on {route} = {ratio:.3f}")


if __name__ == "__main__":
    main()
