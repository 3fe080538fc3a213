"""memcached under libmpk_shim.so with config/examples/memcached.toml (and, in its default mode,
memcached-heap.toml), on this machine.

Where the CPU lacks PKU (pkey_alloc fails) the shim passes everything through, so these tests
check that nothing breaks: data stays exact under concurrent clients and evictions, the
protocol test suite passes, a warm restart keeps the data, and a bad policy stops memcached
before it serves anything. test_guest.py checks the protection itself on an emulated CPU.

The heap policy is also run on simulated keys (MPK_SIMULATE=1), where the shim is active on any
CPU: memcached's slab pages and hash table really come from the shim's region heap there (its
counters say so), so exact data under concurrent clients and evictions, and memccapable, check
the allocator's path, not glibc's.
"""

import json
import os
import random
import re
import signal
import subprocess
import threading
import time

import pytest
from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheServerError

from memcached_run import HEAP_POLICY, POLICY, Memcached

CLIENTS = 8
OPS_PER_CLIENT = 200


SIZES = [1, 7, 100, 1000, 4096, 30000, 100000, 500000, 1000000]


def value_for(key, version, size):
    seed = f"{key}/{version}/".encode()
    return (seed * (size // len(seed) + 1))[:size]


def refused_for_memory(e):
    """memcached's own answer when it cannot find memory for an item: with -m 40 and values up to
    1 MB written by 8 clients at once, every item of a slab class can be in use ("SERVER_ERROR Out
    of memory during read", "... out of memory storing object"). It happens without the shim too."""
    return isinstance(e, MemcacheServerError) and "out of memory" in str(e).lower()


def client_workload(port, cid, failures, counts):
    """One client's mix of set/get/delete/incr/cas/append; every hit must be exact. A write that
    memcached refuses for lack of memory is counted, and its key's value is then unknown (the
    old one may or may not have been dropped): later reads of it are not judged."""
    rng = random.Random(cid)
    c = Client(("127.0.0.1", port), connect_timeout=5, timeout=20, default_noreply=False)
    last = {}      # key -> bytes last written by this client (None: deleted)
    try:
        for op in range(OPS_PER_CLIENT):
            key = f"c{cid}-k{rng.randrange(40)}"
            kind = rng.choice(["set", "set", "get", "get", "delete", "append", "cas", "incr"])
            try:
                client_op(c, rng, cid, op, key, kind, last, failures, counts)
            except MemcacheServerError as e:
                if not refused_for_memory(e):
                    raise
                counts["refused"] += 1
                last.pop(key, None)
        for key, v in last.items():
            got = c.get(key)
            if got is not None and (v is None or got != v):
                failures.append(f"final get {key}: wrong data")
    except Exception as e:   # noqa: BLE001 - a client error fails the test with its message
        failures.append(f"client {cid}: {type(e).__name__}: {e}")
    finally:
        c.close()


def client_op(c, rng, cid, op, key, kind, last, failures, counts):
    """One operation of client_workload's mix."""
    if kind == "set":
        v = value_for(key, op, rng.choice(SIZES))
        assert c.set(key, v), f"set {key} failed"
        last[key] = v
    elif kind == "get":
        got = c.get(key)
        if got is not None and key in last and got != last[key]:
            failures.append(f"get {key}: wrong data ({len(got)} bytes, expected {len(last[key] or b'')})")
        if got is not None and key in last and last[key] is None:
            failures.append(f"get {key}: a deleted key is back")
        counts["hit" if got is not None else "miss"] += 1
    elif kind == "delete":
        c.delete(key)
        last[key] = None
    elif kind == "append":
        if c.append(key, b"+tail") and last.get(key) is not None:
            last[key] += b"+tail"
        elif key in last and last[key] is not None:
            last.pop(key)        # evicted meanwhile: nothing is known any more
    elif kind == "cas":
        got, unique = c.gets(key)
        if got is None:
            return
        if key in last and last[key] is not None and got != last[key]:
            failures.append(f"gets {key}: wrong data")
        v = value_for(key, op + 100000, rng.choice(SIZES[:6]))
        if c.cas(key, v, unique):
            last[key] = v
        if c.cas(key, b"stale", unique):
            failures.append(f"cas {key}: a stale unique won")
    else:
        ckey = f"c{cid}-counter"
        c.set(ckey, b"5")
        for n in range(1, 6):
            r = c.incr(ckey, 2)
            if r is not None and r != 5 + 2 * n:
                failures.append(f"incr {ckey}: {r}, expected {5 + 2 * n}")
                break


def test_policy_is_valid(tools):
    r = subprocess.run([tools["mc_policy_check"], POLICY], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "region 'cache'" in r.stdout and "isolate" in r.stdout


def clients_read_back_exact_data_with_evictions(port):
    """CLIENTS concurrent clients (client_workload) against memcached on port: every value read
    back is exact, some are hits, and memcached evicted items."""
    failures, counts = [], {"hit": 0, "miss": 0, "refused": 0}
    threads = [threading.Thread(target=client_workload, args=(port, i, failures, counts)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = Client(("127.0.0.1", port)).stats()
    assert not failures, "\n".join(failures[:20])
    assert counts["hit"] > 0, counts
    assert int(stats[b"evictions"]) > 0, "the load did not force evictions: make it bigger"


def test_concurrent_clients_exact_data_with_evictions(tools, tmp_path):
    # -m 40 (the least memcached -e -I 2m starts with) and values up to 1 MB: items are evicted.
    with Memcached(tmp_path, shim=tools["mc_shim"], memory_mb=40,
                   env={"MPK_STATS": str(tmp_path / "stats.json")}) as mc:
        clients_read_back_exact_data_with_evictions(mc.port)
        assert mc.proc.poll() is None, mc.output()
    assert mc.proc.returncode == 0, mc.output()
    shim_stats = json.loads((tmp_path / "stats.json").read_text())
    assert shim_stats["violations"] == 0, shim_stats


def test_checking_client(tools, tmp_path):
    with Memcached(tmp_path, shim=tools["mc_shim"]) as mc:
        r = subprocess.run([tools["mc_load"], "-p", str(mc.port), "-c", "4", "-n", "150", "-s", "1000000",
                            "-r", "2"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr + mc.output()
        assert "mismatches=0 errors=0" in r.stdout, r.stdout


def test_memccapable(tools, tmp_path):
    with Memcached(tmp_path, shim=tools["mc_shim"]) as mc:
        r = subprocess.run(["memccapable", "-h", "127.0.0.1", "-p", str(mc.port)], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0 and "All tests passed" in r.stdout, r.stdout[-3000:] + r.stderr


def test_warm_restart_keeps_data(tools, tmp_path):
    keys = {f"warm-{i}": value_for(f"warm-{i}", 1, size)
            for i, size in enumerate([1, 10, 1000, 50000, 300000, 1000000] * 5)}
    mc = Memcached(tmp_path, shim=tools["mc_shim"]).start()
    try:
        c = Client(("127.0.0.1", mc.port))
        for k, v in keys.items():
            assert c.set(k, v)
        c.close()
    finally:
        status = mc.stop(signal.SIGUSR1)      # graceful stop: the cache file is kept for a restart
    assert status == 0, mc.output()
    assert os.path.exists(mc.cache_file + ".meta"), mc.output()
    # memcached 1.6.18 rejects the saved state when it starts again in the second it stopped
    # ("restart incompatible due to setting for [stop_time]"), shim or not.
    time.sleep(1.2)
    with Memcached(tmp_path, shim=tools["mc_shim"], port=mc.port, cache_file=mc.cache_file) as again:
        c = Client(("127.0.0.1", again.port))
        for k, v in keys.items():
            assert c.get(k) == v, f"{k}: not kept across the restart\n{again.output()}"
        c.close()


def test_bad_policy_stops_memcached(tools, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('mode = "enforce"\n\n[[region]]\nname = "cache"\nsizee = "1M"\naction = "isolate"\n')
    mc = Memcached(tmp_path, shim=tools["mc_shim"], policy=str(bad)).start(wait=False)
    try:
        status = mc.proc.wait(15)
    finally:
        mc.stop()
    out = mc.output()
    assert status == 1, out
    assert re.search(re.escape(str(bad)) + r":5:1: unknown key 'sizee'", out), out
    assert "not started" in out, out
    assert "Client using" not in out and not os.path.exists(mc.cache_file), \
        "memcached ran before the policy was checked"


def test_heap_policy_is_valid(tools):
    r = subprocess.run([tools["mc_policy_check"], HEAP_POLICY], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "region 'items'" in r.stdout and "takes its memory from the heap" in r.stdout, r.stdout


def heap_memcached(tools, tmp_path, memory_mb=16):
    return Memcached(tmp_path, shim=tools["mc_shim"], policy=HEAP_POLICY, memory_mb=memory_mb, default_mode=True,
                     env={"MPK_SIMULATE": "1", "MPK_STATS": str(tmp_path / "stats.json")})


def test_default_mode_items_from_the_region_heap_exact_with_evictions(tools, tmp_path):
    with heap_memcached(tools, tmp_path) as mc:
        clients_read_back_exact_data_with_evictions(mc.port)
    assert mc.proc.returncode == 0, mc.output()
    s = json.loads((tmp_path / "stats.json").read_text())
    assert s["backend"] == "simulated" and s["active"] is True, s
    # -m 16: 16 slab pages of 1 MiB at most (and a few preallocated), plus the 512 KiB hash table: all of
    # them the region's.
    assert 2 <= s["region_allocs"] <= 64 and s["region_unserved"] == 0, s
    items = {r["name"]: r for r in s["regions"]}["items"]
    assert items["kind"] == "isolate-heap" and items["key"] > 0, items
    rights = {t["name"]: t["right"] for t in items["threads"]}
    assert rights.get("mc-worker") == "rw" and rights.get("mc-log") == "none", items["threads"]
    assert s["violations"] == 0 and s["lazy_grants"] == 0, s


def test_default_mode_memccapable(tools, tmp_path):
    with heap_memcached(tools, tmp_path, memory_mb=64) as mc:
        r = subprocess.run(["memccapable", "-h", "127.0.0.1", "-p", str(mc.port)], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0 and "All tests passed" in r.stdout, r.stdout[-3000:] + r.stderr
    s = json.loads((tmp_path / "stats.json").read_text())
    assert s["region_allocs"] >= 2, s
