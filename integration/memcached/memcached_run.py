"""Starting memcached natively, with or without libmpk_shim.so, on a free loopback port."""

import os
import signal
import socket
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
POLICY = os.path.join(REPO, "config", "examples", "memcached.toml")
HEAP_POLICY = os.path.join(REPO, "config", "examples", "memcached-heap.toml")
MEMCACHED = "/usr/bin/memcached"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env():
    return {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("MPK_")
            and not k.startswith("INTRUDER_")}


class Memcached:
    """memcached -e CACHE_FILE on 127.0.0.1:PORT (default_mode: without -e, items in malloc'd slab
    pages); under the shim when `shim` is given."""

    def __init__(self, workdir, shim=None, policy=POLICY, memory_mb=64, threads=4, extra=(), env=None,
                 cache_file=None, port=None, default_mode=False):
        self.port = port or free_port()
        self.cache_file = cache_file or os.path.join(workdir, "cache")
        self.log_path = os.path.join(workdir, f"memcached-{self.port}-{time.monotonic_ns()}.log")
        self.argv = [MEMCACHED, "-u", "root", "-l", "127.0.0.1", "-p", str(self.port), "-U", "0",
                     "-t", str(threads), "-m", str(memory_mb), "-I", "2m",
                     *([] if default_mode else ["-e", self.cache_file]), *extra]
        self.env = clean_env()
        if shim:
            self.env["LD_PRELOAD"] = shim
            if policy:
                self.env["MPK_CONFIG"] = policy
        self.env.update(env or {})
        self.proc = None

    def start(self, wait=True, timeout=15):
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_listening(timeout)
        return self

    def wait_listening(self, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"memcached exited with {self.proc.returncode}:\n{self.output()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"memcached did not listen on port {self.port} within {timeout}s:\n{self.output()}")

    def output(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
