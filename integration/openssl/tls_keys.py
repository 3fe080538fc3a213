"""TLS keys for the OpenSSL tests and the demo: an RSA and an EC key with self-signed
certificates, and the byte strings of their secrets to look for in a server's memory
(mpk_secret_scan)."""

import os
import re
import shutil
import subprocess

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
RSA_NUMBERS = ["privateExponent", "prime1", "prime2", "exponent1", "exponent2", "coefficient"]


def key_numbers(keyfile):
    """The private numbers `openssl pkey -text` prints for a key file, as integers."""
    text = subprocess.run([OPENSSL, "pkey", "-in", keyfile, "-text", "-noout"], capture_output=True, text=True,
                          check=True).stdout
    out, cur = {}, None
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z0-9]+):\s*$", line)
        if m:
            cur = m.group(1)
            out[cur] = ""
        elif cur and re.match(r"^\s+[0-9a-f:]+$", line):
            out[cur] += line.strip().replace(":", "")
        else:
            cur = None
    return {k: int(v, 16) for k, v in out.items() if v}


def make_keys(d):
    """Writes rsa.key/.crt, ec.key/.crt (P-256) and needles.txt ("NAME HEX" lines: each secret
    number in the byte order of OpenSSL's BIGNUMs (-le) and big-endian as DER holds it (-be), and a
    line of each key's PEM text) into folder d; returns the needle names."""
    for kind, opts in (("rsa", ["-newkey", "rsa:2048"]),
                       ("ec", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"])):
        subprocess.run([OPENSSL, "req", "-x509", *opts, "-nodes", "-keyout", os.path.join(d, f"{kind}.key"),
                        "-out", os.path.join(d, f"{kind}.crt"), "-days", "30", "-subj", "/CN=localhost"],
                       check=True, capture_output=True)
    needles = []
    for kind, names in (("rsa", RSA_NUMBERS), ("ec", ["priv"])):
        nums = key_numbers(os.path.join(d, f"{kind}.key"))
        for n in names:
            v = nums[n]
            length = (v.bit_length() + 7) // 8
            needles.append((f"{kind}-{n}-le", v.to_bytes(length, "little")))
            needles.append((f"{kind}-{n}-be", v.to_bytes(length, "big")))
        with open(os.path.join(d, f"{kind}.key")) as f:
            pem = [line for line in f.read().splitlines() if line and not line.startswith("-----")]
        needles.append((f"{kind}-pem", pem[len(pem) // 2].encode()))
    with open(os.path.join(d, "needles.txt"), "w") as f:
        f.write("".join(f"{name} {b.hex()}\n" for name, b in needles))
    return [n for n, _ in needles]


def scan_hits(output):
    """mpk_secret_scan's "hit NAME ADDRESS key=K PERMS PATH" lines as (name, address, key)."""
    return [(m[0], int(m[1], 16), int(m[2])) for m in
            re.findall(r"^hit (\S+) 0x([0-9a-f]+) key=(-?\d+) \S+ .*$", output, re.M)]


def range_sh(stat):
    """Shell (for the server whose pid is $pid): the 'keys' region's first span from mpk-stat, as
    "LO HI" into $D/range (libmpk_intruder.so's target), and a line "keys-range LO HI key K"."""
    return (f"{stat} $pid > $D/live.json\n"
            "set -- $(sed -n 's/.*\"name\":\"keys\",\"kind\":\"isolate-heap[^\"]*\",\"ranges\":\\[\\[\"0x\\([0-9a-f]*\\)\","
            "\\([0-9]*\\)\\].*\"key\":\\([0-9]*\\).*/\\1 \\2 \\3/p' $D/live.json)\n"
            "printf '%x %x\\n' $((0x$1)) $((0x$1 + $2)) > $D/range; echo \"keys-range $(cat $D/range) key $3\"\n")
