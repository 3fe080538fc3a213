"""memcached under libmpk_shim.so on a CPU with protection keys: natively when this CPU has PKU,
else in a QEMU TCG guest (-cpu max). Whether the keys are real is decided by the CPU alone.

One run (one boot in the guest) does every check (guest_batch.py); each test below reads its
check's result:
- the cache file mapping carries a hardware key (smaps), the shim reports the region resident,
  and a verifying load, memcslap and memccapable run with zero violations;
- a thread named "intruder" reading the cache stops memcached in enforce mode, with a report
  naming the thread, the region and the address;
- in audit mode memcached keeps serving exact data and each of the intruder's three access
  sites is reported once;
- MPK_LEARN=1 learning memcached, then the learned policy enforced on the same workload (a second
  boot) with no violation;
- memcached in its default mode (no -e) under memcached-heap.toml: its slab pages and hash table
  come from the shim's region heap and carry the region's key; the same load, memcslap and
  memccapable with zero violations, and no lazy grant or sync signal in steady state; the
  intruder reading the hash table is stopped (enforce) or reported once per site (audit).
"""

import json
import os
import re
import subprocess

import pytest

import guest_batch
from memcached_run import HEAP_POLICY, POLICY

REPO = guest_batch.REPO
MPK_LEARN = os.path.join(REPO, "scripts", "mpk-learn")
ROUNDS = 4

MC = "/usr/bin/memcached -u root -l 127.0.0.1 -U 0 -t 4 -m 64 -I 2m"

# The items region's first span (the hash table) from mpk-stat's JSON, as "LO HI" in hex, into
# $D/range (the intruder's target), and the ProtectionKey of the VMA that starts there.
HEAP_RANGE = r"""{stat} $pid > $D/live.json; echo "mpk-stat-exit $?"
set -- $(sed -n 's/.*"name":"items","kind":"isolate-heap[^"]*","ranges":\[\["0x\([0-9a-f]*\)",\([0-9]*\)\].*/\1 \2/p' $D/live.json)
lo=$1; printf '%x %x\n' $((0x$1)) $((0x$1 + $2)) > $D/range; cat $D/range | sed 's/^/items-range /'
awk -v lo="$lo" '/^[0-9a-f]+-[0-9a-f]+ / {{hit = (index($1, lo "-") == 1)}} hit && /^ProtectionKey:/ {{print "items-key", $2}}' /proc/$pid/smaps"""


def check(name, port, body):
    """A guest snippet with $D (its folder), $PORT, and a watchdog that kills memcached ($pid)."""
    return f"""D=/tmp/{name}; PORT={port}; mkdir -p $D; cd $D; fail=0
watchdog() {{ ( sleep $1; kill -9 $pid 2>/dev/null ) & }}
{body}"""


def build_checks(t, workdir):
    shim, intr, load = t["mc_shim"], t["mc_intruder"], t["mc_load"]
    stat = os.path.join(os.path.dirname(shim), "mpk-stat")
    text = open(POLICY).read()
    learn = os.path.join(workdir, "memcached-learn.toml")
    with open(learn, "w") as f:
        f.write(text)
    smaps_key = """awk -v f="$D/cache" '/^[0-9a-f]+-[0-9a-f]+ / {hit = ($6 == f)} hit && /^ProtectionKey:/ {print "cache-key", $2}' /proc/$pid/smaps"""
    checks = [
        ("protect", check("protect", 11401, f"""
MPK_CONFIG={POLICY} MPK_STATS=$D/stats.json LD_PRELOAD={shim} {MC} -p $PORT -e $D/cache > $D/mc.log 2>&1 &
pid=$!; watchdog 240
{load} -p $PORT -w 60 -c 4 -n 40 -s 300000 -r 2 || fail=1
{smaps_key}
{stat} $pid > $D/live.json; echo "mpk-stat-exit $?"
memcslap -s 127.0.0.1:$PORT -c 4 -e 300 -t set || fail=1
memcslap -s 127.0.0.1:$PORT -c 4 -e 300 -t get || fail=1
memccapable -h 127.0.0.1 -p $PORT > $D/capable.out 2>&1; echo "memccapable-exit $?"; tail -n 3 $D/capable.out
{load} -p $PORT -c 4 -n 40 -s 300000 -r 2 -C || fail=1
kill -TERM $pid; wait $pid; echo "memcached-exit $?"
cat $D/mc.log
exit $fail"""), ["/tmp/protect/stats.json", "/tmp/protect/live.json"]),
        ("enforce", check("enforce", 11402, f"""
INTRUDER_FILE=$D/cache INTRUDER_DELAY_MS=1500 MPK_CONFIG={POLICY} LD_PRELOAD={shim}:{intr} {MC} -p $PORT -e $D/cache > $D/mc.log 2>&1 &
pid=$!; watchdog 90
{load} -p $PORT -w 60 -c 4 -n 10 -s 1000 -r 1
wait $pid; echo "memcached-exit $?"
cat $D/mc.log"""), []),
        ("audit", check("audit", 11403, f"""
MPK_MODE=audit INTRUDER_FILE=$D/cache INTRUDER_TRIGGER=$D/go INTRUDER_DELAY_MS=0 INTRUDER_ROUNDS={ROUNDS} \\
  MPK_CONFIG={POLICY} MPK_STATS=$D/stats.json LD_PRELOAD={shim}:{intr} {MC} -p $PORT -e $D/cache > $D/mc.log 2>&1 &
pid=$!; watchdog 180
{load} -p $PORT -w 60 -c 4 -n 30 -s 100000 -r 1 -k before || fail=1
touch $D/go
i=0; while [ $i -lt 300 ] && ! grep -q 'intruder: done' $D/mc.log; do sleep 0.1; i=$((i + 1)); done
{load} -p $PORT -c 4 -n 30 -s 100000 -r 1 -k before -C || fail=1
{load} -p $PORT -c 4 -n 30 -s 100000 -r 1 -k after || fail=1
kill -TERM $pid; wait $pid; echo "memcached-exit $?"
cat $D/mc.log
exit $fail"""), ["/tmp/audit/stats.json"]),
        ("learn", check("learn", 11405, f"""
MPK_LEARN=1 MPK_CONFIG={learn} LD_PRELOAD={shim} {MC} -p $PORT -e $D/cache > $D/mc.log 2>&1 &
pid=$!; watchdog 40
{load} -p $PORT -w 30 -c 4 -n 10 -s 500 -r 1 || fail=1
kill -TERM $pid; wait $pid; echo "memcached-exit $?"
head -c 20000 $D/mc.log
exit $fail"""), []),
    ]
    heap_range = HEAP_RANGE.format(stat=stat)
    checks += [
        ("heap", check("heap", 11411, f"""
MPK_CONFIG={HEAP_POLICY} MPK_STATS=$D/stats.json LD_PRELOAD={shim} {MC} -p $PORT > $D/mc.log 2>&1 &
pid=$!; watchdog 240
{load} -p $PORT -w 60 -c 4 -n 40 -s 300000 -r 2 || fail=1
{heap_range}
memcslap -s 127.0.0.1:$PORT -c 4 -e 300 -t set || fail=1
memcslap -s 127.0.0.1:$PORT -c 4 -e 300 -t get || fail=1
memccapable -h 127.0.0.1 -p $PORT > $D/capable.out 2>&1; echo "memccapable-exit $?"; tail -n 3 $D/capable.out
{stat} $pid > $D/warm.json
{load} -p $PORT -c 4 -n 40 -s 300000 -r 2 -k steady || fail=1
{load} -p $PORT -c 4 -n 40 -s 300000 -r 2 -k steady -C || fail=1
{stat} $pid > $D/steady.json
kill -TERM $pid; wait $pid; echo "memcached-exit $?"
cat $D/mc.log
exit $fail"""), ["/tmp/heap/stats.json", "/tmp/heap/warm.json", "/tmp/heap/steady.json"]),
        ("heap-enforce", check("heap-enforce", 11412, f"""
INTRUDER_RANGE_FILE=$D/range INTRUDER_DELAY_MS=0 MPK_CONFIG={HEAP_POLICY} LD_PRELOAD={shim}:{intr} {MC} -p $PORT > $D/mc.log 2>&1 &
pid=$!; watchdog 90
{load} -p $PORT -w 60 -c 4 -n 10 -s 1000 -r 1
{heap_range}
wait $pid; echo "memcached-exit $?"
cat $D/mc.log"""), []),
        ("heap-audit", check("heap-audit", 11413, f"""
MPK_MODE=audit INTRUDER_RANGE_FILE=$D/range INTRUDER_DELAY_MS=0 INTRUDER_ROUNDS={ROUNDS} \\
  MPK_CONFIG={HEAP_POLICY} MPK_STATS=$D/stats.json LD_PRELOAD={shim}:{intr} {MC} -p $PORT > $D/mc.log 2>&1 &
pid=$!; watchdog 180
{load} -p $PORT -w 60 -c 4 -n 30 -s 100000 -r 1 -k before || fail=1
{heap_range}
i=0; while [ $i -lt 300 ] && ! grep -q 'intruder: done' $D/mc.log; do sleep 0.1; i=$((i + 1)); done
{load} -p $PORT -c 4 -n 30 -s 100000 -r 1 -k before -C || fail=1
{load} -p $PORT -c 4 -n 30 -s 100000 -r 1 -k after || fail=1
kill -TERM $pid; wait $pid; echo "memcached-exit $?"
cat $D/mc.log
exit $fail"""), ["/tmp/heap-audit/stats.json"]),
    ]
    files = [shim, intr, load, stat, POLICY, HEAP_POLICY, learn, "/usr/bin/memcached", "/usr/bin/memcslap",
             "/usr/bin/memccapable"]
    return checks, files


@pytest.fixture(scope="module")
def guest(tools, tmp_path_factory):
    work = str(tmp_path_factory.mktemp("guest"))
    checks, files = build_checks(tools, work)
    try:
        results = guest_batch.run(checks, files, work, timeout=380)
    except RuntimeError as e:
        pytest.fail(str(e))
    results["tools"] = tools
    return results


def violations(output):
    out = []
    for line in output.splitlines():
        at = line.find('{"event":"violation"')
        if at >= 0:
            out.append(json.loads(line[at:]))
    return out


def cache_range(output):
    m = re.search(r"mapped at 0x([0-9a-f]+)-0x([0-9a-f]+)", output)
    assert m, "the intruder did not find the cache mapping:\n" + output
    return int(m.group(1), 16), int(m.group(2), 16)


def test_cache_in_its_own_key_and_no_violations(guest):
    r = guest["protect"]
    out = r["output"]
    assert r["status"] == 0, out
    m = re.search(r"^cache-key (\d+)$", out, re.M)
    assert m, "no smaps entry for the cache file:\n" + out
    assert int(m.group(1)) != 0, "the cache file mapping is on key 0:\n" + out
    assert "memccapable-exit 0" in out and "All tests passed" in out, out
    assert "memcached-exit 0" in out, out
    assert not violations(out) and "mpk: violation" not in out, out
    stats = json.loads(r["files"]["/tmp/protect/stats.json"])
    assert stats["active"] is True and stats["violations"] == 0, stats
    regions = {x["name"]: x for x in stats["regions"]}
    assert "cache" in regions, stats
    cache = regions["cache"]
    assert cache["key"] == int(m.group(1)), (cache, m.group(1))
    assert sum(length for _, length in cache["ranges"]) == 64 << 20, cache
    assert stats["resident_groups"] >= 1, stats
    # The rights the shim gave each live thread: the workers (4, -t 4) were granted.
    rights = {}
    for t in cache["threads"]:
        rights.setdefault(t["name"], set()).add(t["right"])
    workers = [t for t in cache["threads"] if t["name"] == "mc-worker"]
    assert len(workers) == 4 and rights["mc-worker"] == {"rw"}, cache["threads"]
    assert rights.get("mc-log") == {"none"}, cache["threads"]
    # The same statistics, read live from the running server by mpk-stat.
    assert "mpk-stat-exit 0" in out, out
    live = json.loads(r["files"]["/tmp/protect/live.json"])
    live_cache = {x["name"]: x for x in live["regions"]}["cache"]
    assert live["active"] is True and live["pid"] == stats["pid"], (live, stats["pid"])
    assert live_cache["key"] == cache["key"] and live_cache["kind"] == "isolate", live


def expect_intruder_stopped(out, lo, hi, region):
    """One report, the intruder's read of region inside [lo, hi), and memcached stopped by it."""
    assert "memcached-exit 139" in out, "memcached was not stopped by SIGSEGV:\n" + out
    reports = violations(out)
    assert len(reports) == 1, out
    v = reports[0]
    assert v["thread"] == "intruder" and v["region"] == region and v["mode"] == "enforce", v
    assert lo <= int(v["address"], 16) < hi, (v, hex(lo), hex(hi))
    assert re.search(rf"mpk: violation: thread \d+ 'intruder' read from region '{region}' at 0x[0-9a-f]+", out), out
    assert "intruder: done" not in out, "the intruder read the region and went on:\n" + out


def expect_intruder_reported(r, lo, hi, stats_file):
    """Audit mode: memcached served exact data throughout, each of the intruder's 3 access sites
    inside [lo, hi) reported once, every access counted."""
    out = r["output"]
    assert r["status"] == 0, "memcached did not keep serving exact data:\n" + out
    assert "intruder: done" in out and "memcached-exit 0" in out, out
    reports = violations(out)
    assert {v["thread"] for v in reports} == {"intruder"}, reports
    sites = [v["backtrace"][0] for v in reports]
    assert len(sites) == 3 and len(set(sites)) == 3, "each of the 3 sites once:\n" + "\n".join(sites)
    assert all(lo <= int(v["address"], 16) < hi and v["mode"] == "audit" for v in reports), reports
    stats = json.loads(r["files"][stats_file])
    assert stats["violations"] == 3 * ROUNDS, stats


def test_intruder_stopped_in_enforce_mode(guest):
    out = guest["enforce"]["output"]
    expect_intruder_stopped(out, *cache_range(out), "cache")


def test_intruder_logged_once_per_site_in_audit_mode(guest):
    r = guest["audit"]
    expect_intruder_reported(r, *cache_range(r["output"]), "/tmp/audit/stats.json")


def items_range(output):
    m = re.search(r"^items-range ([0-9a-f]+) ([0-9a-f]+)$", output, re.M)
    assert m, "mpk-stat named no heap region 'items':\n" + output
    return int(m.group(1), 16), int(m.group(2), 16)


def test_default_mode_items_in_their_own_key_and_no_violations(guest):
    r = guest["heap"]
    out = r["output"]
    assert r["status"] == 0, out
    lo, hi = items_range(out)
    assert hi - lo == 512 << 10, "the first span is the 512 KiB hash table:\n" + out
    m = re.search(r"^items-key (\d+)$", out, re.M)
    assert m and int(m.group(1)) != 0, "the hash table is not on a key of its own:\n" + out
    assert "memccapable-exit 0" in out and "All tests passed" in out, out
    assert "memcached-exit 0" in out, out
    assert not violations(out) and "mpk: violation" not in out, out
    stats = json.loads(r["files"]["/tmp/heap/stats.json"])
    assert stats["active"] is True and stats["violations"] == 0, stats
    items = {x["name"]: x for x in stats["regions"]}["items"]
    assert items["kind"] == "isolate-heap" and items["key"] == int(m.group(1)), (items, m.group(1))
    assert stats["region_allocs"] >= 2 and stats["region_unserved"] == 0, stats
    rights = {}
    for t in items["threads"]:
        rights.setdefault(t["name"], set()).add(t["right"])
    assert rights["mc-worker"] == {"rw"} and rights.get("mc-log") == {"none"}, items["threads"]
    # Steady state: a warm server serving more requests takes no lazy grant and sends no signal.
    warm = json.loads(r["files"]["/tmp/heap/warm.json"])
    steady = json.loads(r["files"]["/tmp/heap/steady.json"])
    for k in ("lazy_grants", "revocation_signals", "violations"):
        assert steady[k] == warm[k], (k, warm[k], steady[k])


def test_default_mode_intruder_stopped_in_enforce_mode(guest):
    out = guest["heap-enforce"]["output"]
    expect_intruder_stopped(out, *items_range(out), "items")


def test_default_mode_intruder_logged_once_per_site_in_audit_mode(guest):
    r = guest["heap-audit"]
    expect_intruder_reported(r, *items_range(r["output"]), "/tmp/heap-audit/stats.json")


def test_learning(guest, tmp_path):
    r = guest["learn"]
    out = r["output"]
    assert r["status"] == 0, "memcached did not serve under MPK_LEARN=1 within 30 s:\n" + out[-2000:]
    log = tmp_path / "learn.log"
    log.write_text(out)
    learned = tmp_path / "learned.toml"
    subprocess.run([MPK_LEARN, str(learned), "--policy", POLICY, "--from-log", str(log)], check=True)
    text = learned.read_text()
    for name in ("memcached", "mc-worker"):
        assert f'name = "{name}"\nright = "rw"' in text, text
    # The learned policy, enforced, on the same workload: no violation.
    t = guest["tools"]
    shim, load = t["mc_shim"], t["mc_load"]
    body = check("relearn", 11406, f"""
MPK_CONFIG={learned} LD_PRELOAD={shim} {MC} -p $PORT -e $D/cache > $D/mc.log 2>&1 &
pid=$!; watchdog 60
{load} -p $PORT -w 30 -c 4 -n 10 -s 500 -r 1 || fail=1
kill -TERM $pid; wait $pid; echo "memcached-exit $?"
cat $D/mc.log
exit $fail""")
    res = guest_batch.run([("relearn", body, [])], [shim, load, str(learned), "/usr/bin/memcached"],
                          str(tmp_path), timeout=200)
    again = res["relearn"]
    assert again["status"] == 0 and "memcached-exit 0" in again["output"], again["output"]
    assert not violations(again["output"]) and "mpk: violation" not in again["output"], again["output"]
