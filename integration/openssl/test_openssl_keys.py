"""OpenSSL's private keys in an isolated region: unmodified `openssl s_server` and nginx under
libmpk_shim.so and config/examples/openssl-keys.toml, each with an RSA and an EC key.

Natively (simulated keys on a CPU without PKU, so that the shim is active): TLS handshakes with
both keys succeed, through the gates, with the keys loaded into the region heap.

With real keys (natively on a CPU with PKU, else in one QEMU guest boot, integration/memcached/
guest_batch.py), in enforce mode:
- handshakes with both keys (TLS 1.2 with RSA and with ECDSA, TLS 1.3), no violation, nginx's
  workers (forked after the keys are loaded) included, and nginx's graceful stop (its workers'
  exit handlers free the keys inside the gate);
- where the secrets are: mpk_secret_scan reads each server process from outside (/proc/PID/mem)
  and finds every copy of the secret numbers (RSA d, p, q, dP, dQ, qInv; the EC private scalar;
  in the bytes order of OpenSSL's BIGNUMs and in big-endian, as DER holds them) and of the PEM
  text: each is found, and only in memory that carries the region's protection key;
- a thread outside the gates (libmpk_intruder.so) reading the key memory stops s_server in
  enforce mode, and is reported once per access site in audit mode while handshakes go on.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "integration", "memcached"))
sys.path.insert(0, HERE)
import guest_batch  # noqa: E402
import tls_keys  # noqa: E402
from tls_keys import OPENSSL  # noqa: E402

POLICY = os.path.join(REPO, "config", "examples", "openssl-keys.toml")
NGINX = shutil.which("nginx", path="/usr/sbin:/usr/bin:" + os.environ.get("PATH", "")) or "/usr/sbin/nginx"
# Three handshakes: TLS 1.2 with the RSA key, TLS 1.2 with the EC key, TLS 1.3 (either).
CLIENTS = [("rsa12", "-tls1_2 -cipher ECDHE-RSA-AES128-GCM-SHA256"),
           ("ec12", "-tls1_2 -cipher ECDHE-ECDSA-AES128-GCM-SHA256"),
           ("any13", "-tls1_3")]


def tool(env):
    path = os.environ.get(env, "")
    if not path or not os.path.isfile(path):
        pytest.fail(f"${env} does not name a built file ({path!r}): run through ctest (mpk_openssl_keys)")
    return os.path.realpath(path)


@pytest.fixture(scope="module")
def tools():
    for prog in (OPENSSL, NGINX):
        if not os.path.isfile(prog):
            pytest.fail(f"{prog} not found: install the Debian packages openssl and nginx-light (scripts/setup)")
    return {k: tool(v) for k, v in (("shim", "MPK_SHIM"), ("stat", "MPK_STAT"), ("scan", "MPK_SECRET_SCAN"),
                                     ("intruder", "MPK_INTRUDER"), ("check", "MPK_POLICY_CHECK"))}


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """An RSA and an EC (P-256) key with self-signed certificates, and the needles to look for."""
    d = tmp_path_factory.mktemp("keys")
    return {"dir": str(d), "needles": tls_keys.make_keys(str(d))}


def nginx_conf(dirname, port, keydir):
    return f"""daemon off;
master_process on;
worker_processes 2;
user root;
pid {dirname}/nginx.pid;
error_log {dirname}/error.log info;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {dirname}/body; proxy_temp_path {dirname}/proxy; fastcgi_temp_path {dirname}/fastcgi;
  uwsgi_temp_path {dirname}/uwsgi; scgi_temp_path {dirname}/scgi;
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_certificate {keydir}/rsa.crt;
    ssl_certificate_key {keydir}/rsa.key;
    ssl_certificate {keydir}/ec.crt;
    ssl_certificate_key {keydir}/ec.key;
    location / {{ return 200 "ok\\n"; }}
  }}
}}
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def handshake(port, opts, request=False):
    argv = [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", *opts.split()]
    data = b"GET / HTTP/1.0\r\n\r\n" if request else b""
    if request:
        argv.append("-ign_eof")
    r = subprocess.run(argv, input=data, capture_output=True, timeout=30)
    return r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")


def wait_port(port, proc, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


def simulated_env(tools):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPK_") and k != "LD_PRELOAD"}
    env.update({"LD_PRELOAD": tools["shim"], "MPK_CONFIG": POLICY})
    if not guest_batch.host_has_pku():
        env["MPK_SIMULATE"] = "1"
    return env


def live_stats(tools, pid):
    r = subprocess.run([tools["stat"], str(pid)], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def test_policy_is_valid(tools):
    r = subprocess.run([tools["check"], POLICY], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "region 'keys'" in r.stdout and "gate" in r.stdout, r.stdout


def test_s_server_handshakes_through_the_gates(tools, keys, tmp_path):
    k, port = keys["dir"], free_port()
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([OPENSSL, "s_server", "-accept", f"127.0.0.1:{port}", "-cert", f"{k}/rsa.crt",
                             "-key", f"{k}/rsa.key", "-dcert", f"{k}/ec.crt", "-dkey", f"{k}/ec.key", "-www"],
                            env=simulated_env(tools), stdout=log, stderr=subprocess.STDOUT)
    try:
        assert wait_port(port, proc), (tmp_path / "server.log").read_text()
        loaded = live_stats(tools, proc.pid)
        for name, opts in CLIENTS:
            out = handshake(port, opts)
            assert re.search(r"Cipher is (?!\(NONE\))", out), name + ":\n" + out
        after = live_stats(tools, proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    keys_region = {r["name"]: r for r in after["regions"]}["keys"]
    assert after["active"] and keys_region["kind"] == "isolate-heap" and keys_region["key"] > 0, after
    # Loading the keys allocated inside the gates (the region heap); the handshakes went through
    # them (two PKRU writes per gated call) and allocated there too.
    assert loaded["region_allocs"] > 10, loaded
    assert after["region_allocs"] > loaded["region_allocs"] and after["wrpkru"] > loaded["wrpkru"] + 100, (loaded, after)
    assert after["violations"] == 0, after


def test_nginx_forks_workers_that_serve_through_the_gates(tools, keys, tmp_path):
    port = free_port()
    (tmp_path / "nginx.conf").write_text(nginx_conf(str(tmp_path), port, keys["dir"]))
    proc = subprocess.Popen([NGINX, "-e", str(tmp_path / "error.log"), "-p", str(tmp_path), "-c",
                             str(tmp_path / "nginx.conf")], env=simulated_env(tools),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert wait_port(port, proc), (tmp_path / "error.log").read_text()
        for name, opts in CLIENTS:
            out = handshake(port, opts, request=True)
            assert re.search(r"Cipher is (?!\(NONE\))", out) and "\nok" in out, name + ":\n" + out
    finally:
        proc.send_signal(signal.SIGQUIT)  # graceful: the workers finish and run their exit handlers
        proc.wait(20)
    errors = (tmp_path / "error.log").read_text()
    assert proc.returncode == 0, errors
    assert "exited on signal" not in errors and "violation" not in errors, errors


# --- with real keys ------------------------------------------------------------------------------

def check(name, body):
    return f"""D=/tmp/ossl-{name}; mkdir -p $D; cd $D; fail=0
{body}"""


def clients_sh(port, request=False):
    lines = []
    for name, opts in CLIENTS:
        req = "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | " if request else "echo | "
        ign = " -ign_eof" if request else ""
        lines.append(f"{req}{OPENSSL} s_client -connect 127.0.0.1:{port} {opts}{ign} > $D/{name}.out 2>&1; "
                     f"echo \"client {name} $(grep -c 'Cipher is [^(]' $D/{name}.out) "
                     f"$(grep -c '^ok' $D/{name}.out)\"")
    return "\n".join(lines)


def wait_listen(port, what):
    # busybox has no nc -z everywhere: s_client itself is the probe.
    return (f"i=0; while [ $i -lt 240 ] && ! echo | {OPENSSL} s_client -connect 127.0.0.1:{port} "
            f"> /dev/null 2>&1; do sleep 0.25; i=$((i + 1)); done; echo \"{what} up after $i\"")


@pytest.fixture(scope="module")
def real_keys(tools, keys, tmp_path_factory):
    work = str(tmp_path_factory.mktemp("real"))
    k, shim, stat, scan, intr = keys["dir"], tools["shim"], tools["stat"], tools["scan"], tools["intruder"]
    ng = os.path.join(work, "ng")
    os.makedirs(ng, exist_ok=True)
    with open(os.path.join(ng, "nginx.conf"), "w") as f:
        f.write(nginx_conf("/tmp/ossl-nginx", 14543, k))
    server = (f"{OPENSSL} s_server -accept 127.0.0.1:{{port}} -cert {k}/rsa.crt -key {k}/rsa.key "
              f"-dcert {k}/ec.crt -dkey {k}/ec.key -www")
    pre = f"MPK_CONFIG={POLICY} LD_PRELOAD={shim}"
    checks = [
        ("s_server", check("s_server", f"""
{pre} {server.format(port=14541)} > $D/server.log 2>&1 &
pid=$!
{wait_listen(14541, "s_server")}
{clients_sh(14541)}
{tls_keys.range_sh(stat)}
{scan} $pid {k}/needles.txt || fail=1
kill -TERM $pid; wait $pid
grep -v '^ACCEPT' $D/server.log
exit $fail"""), []),
        ("nginx", check("nginx", f"""
mkdir -p /var/log/nginx
{pre} {NGINX} -e $D/error.log -p $D -c {ng}/nginx.conf > $D/nginx.out 2>&1 &
pid=$!
{wait_listen(14543, "nginx")}
{clients_sh(14543, request=True)}
{tls_keys.range_sh(stat)}
for p in /proc/[0-9]*; do
  if grep -q nginx $p/cmdline 2>/dev/null; then n=${{p#/proc/}}; echo "process $n $(tr '\\0' ' ' < $p/cmdline)"; {scan} $n {k}/needles.txt || fail=1; fi
done
kill -QUIT $pid; wait $pid; echo "nginx-exit $?"
cat $D/nginx.out $D/error.log
exit $fail"""), []),
        ("enforce", check("enforce", f"""
INTRUDER_RANGE_FILE=$D/range INTRUDER_DELAY_MS=0 {pre}:{intr} {server.format(port=14544)} > $D/server.log 2>&1 &
pid=$!
{wait_listen(14544, "s_server")}
{tls_keys.range_sh(stat)}
wait $pid; echo "server-exit $?"
cat $D/server.log"""), []),
        ("audit", check("audit", f"""
MPK_MODE=audit INTRUDER_RANGE_FILE=$D/range INTRUDER_DELAY_MS=0 INTRUDER_ROUNDS=4 {pre}:{intr} {server.format(port=14545)} > $D/server.log 2>&1 &
pid=$!
{wait_listen(14545, "s_server")}
{tls_keys.range_sh(stat)}
i=0; while [ $i -lt 300 ] && ! grep -q 'intruder: done' $D/server.log; do sleep 0.1; i=$((i + 1)); done
{clients_sh(14545)}
kill -TERM $pid; wait $pid
grep -v '^ACCEPT' $D/server.log
exit $fail"""), []),
    ]
    files = [OPENSSL, NGINX, shim, stat, scan, intr, POLICY, os.path.join(ng, "nginx.conf"),
             *[os.path.join(k, f) for f in ("rsa.key", "rsa.crt", "ec.key", "ec.crt", "needles.txt")]]
    try:
        return guest_batch.run(checks, files, work, timeout=500, copies=("/usr/lib/ssl", "/etc/ssl"))
    except RuntimeError as e:
        pytest.fail(str(e))


def violations(output):
    return [json.loads(line[line.find('{"event":"violation"'):]) for line in output.splitlines()
            if '{"event":"violation"' in line]


def region_key(output):
    m = re.search(r"^keys-range ([0-9a-f]+) ([0-9a-f]+) key (\d+)$", output, re.M)
    assert m, "mpk-stat named no heap region 'keys':\n" + output
    return int(m.group(1), 16), int(m.group(2), 16), int(m.group(3))


def expect_handshakes(output, request=False):
    for name, _ in CLIENTS:
        m = re.search(rf"^client {name} (\d+) (\d+)$", output, re.M)
        assert m and int(m.group(1)) >= 1, f"{name}: no handshake\n" + output
        if request:
            assert int(m.group(2)) == 1, f"{name}: no response\n" + output


def expect_secrets_only_in_the_region(output, needles, key):
    """Every hit of the scan(s) in `output` is on `key`; every secret number was found."""
    hits = tls_keys.scan_hits(output)
    elsewhere = [h for h in hits if h[2] != key]
    assert not elsewhere, "secret bytes outside the region:\n" + "\n".join(f"{n} {a:#x} key={k}" for n, a, k in elsewhere)
    found = {h[0] for h in hits}
    numbers = [n for n in needles if n.endswith("-le")]
    assert set(numbers) <= found, f"not found at all (the scan would prove nothing): {set(numbers) - found}"
    return found


def test_s_server_keys_only_in_the_region(real_keys, keys):
    r = real_keys["s_server"]
    out = r["output"]
    assert r["status"] == 0, out
    expect_handshakes(out)
    assert not violations(out) and "mpk: violation" not in out, out
    _, _, key = region_key(out)
    assert key > 0, out
    expect_secrets_only_in_the_region(out, keys["needles"], key)


def test_nginx_master_and_workers_keys_only_in_the_region(real_keys, keys):
    r = real_keys["nginx"]
    out = r["output"]
    assert r["status"] == 0, out
    expect_handshakes(out, request=True)
    assert "nginx-exit 0" in out, out
    assert not violations(out) and "exited on signal" not in out, out
    _, _, key = region_key(out)
    processes = re.findall(r"^process (\d+) (.*)$", out, re.M)
    assert sum("worker process" in p[1] for p in processes) == 2 and any("master" in p[1] for p in processes), out
    # Each process: its own scan, every secret number inside the region (the workers inherited it).
    scans = re.split(r"^process \d+ .*$", out, flags=re.M)[1:]
    assert len(scans) == len(processes), out
    for text in scans:
        expect_secrets_only_in_the_region(text.split("scanned")[0] + "scanned", keys["needles"], key)


def test_a_thread_outside_the_gates_is_stopped(real_keys):
    out = real_keys["enforce"]["output"]
    assert "server-exit 139" in out, "s_server was not stopped by SIGSEGV:\n" + out
    lo, hi, _ = region_key(out)
    reports = violations(out)
    assert len(reports) == 1, out
    v = reports[0]
    assert v["thread"] == "intruder" and v["region"] == "keys" and v["mode"] == "enforce", v
    assert lo <= int(v["address"], 16) < hi, (v, hex(lo), hex(hi))


def test_a_thread_outside_the_gates_is_reported_in_audit_mode(real_keys):
    r = real_keys["audit"]
    out = r["output"]
    assert r["status"] == 0 and "intruder: done" in out, out
    expect_handshakes(out)
    reports = violations(out)
    assert {v["thread"] for v in reports} == {"intruder"}, reports
    sites = {v["backtrace"][0] for v in reports}
    assert len(reports) == 3 and len(sites) == 3, "each of the 3 sites once:\n" + out
