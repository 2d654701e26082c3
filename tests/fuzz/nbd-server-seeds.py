#!/usr/bin/env python3
"""Writes the seed corpus of fuzz-nbd-server into corpus/nbd-server/.

Each seed is what a client sends after the server's greeting: client
flags, options, then (after NBD_OPT_GO / NBD_OPT_EXPORT_NAME) requests.
Run from anywhere: python3 tests/fuzz/nbd-server-seeds.py
"""
import os
import struct

OPTS_MAGIC = 0x49484156454F5054
REQ_MAGIC = 0x25609513
C_FIXED, C_NO_ZEROES = 1, 2
(OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_STARTTLS, OPT_INFO, OPT_GO,
 OPT_STRUCTURED, OPT_LIST_META, OPT_SET_META) = 1, 2, 3, 5, 6, 7, 8, 9, 10
READ, WRITE, DISC, FLUSH, TRIM, CACHE, ZEROES, BSTATUS = range(8)
FUA, NO_HOLE, DF, REQ_ONE, FAST_ZERO = 1, 2, 4, 8, 16


def flags(f=C_FIXED | C_NO_ZEROES):
    return struct.pack(">I", f)


def opt(o, data=b""):
    return struct.pack(">QII", OPTS_MAGIC, o, len(data)) + data


def info(name, reqs=()):
    n = name.encode()
    return struct.pack(">I", len(n)) + n + struct.pack(">H", len(reqs)) + \
        b"".join(struct.pack(">H", r) for r in reqs)


def meta(name, queries):
    n = name.encode()
    d = struct.pack(">I", len(n)) + n + struct.pack(">I", len(queries))
    for q in queries:
        d += struct.pack(">I", len(q)) + q.encode()
    return d


def req(t, off=0, length=0, f=0, cookie=1, payload=None):
    d = struct.pack(">IHHQQI", REQ_MAGIC, f, t, cookie, off, length)
    if t == WRITE:
        d += payload if payload is not None else bytes([0x5a]) * length
    return d


seeds = {
    "export-name-rw": flags() + opt(OPT_EXPORT_NAME) + req(WRITE, 0, 4096) +
    req(READ, 0, 4096, cookie=2) + req(FLUSH, cookie=3) + req(DISC),
    "export-name-zeroes": flags(C_FIXED) + opt(OPT_EXPORT_NAME, b"ro") + req(READ, 512, 512) +
    req(WRITE, 0, 512),
    "go-structured": flags() + opt(OPT_STRUCTURED) +
    opt(OPT_SET_META, meta("", ["base:allocation"])) + opt(OPT_GO, info("", (0, 1, 2, 3))) +
    req(READ, 0, 8192, DF) + req(BSTATUS, 0, 1048576, cookie=2) +
    req(BSTATUS, 4096, 4096, REQ_ONE, cookie=3) + req(TRIM, 0, 65536, FUA, cookie=4) +
    req(ZEROES, 65536, 65536, NO_HOLE, cookie=5) + req(ZEROES, 0, 4096, FAST_ZERO, cookie=6) +
    req(CACHE, 0, 4096, cookie=7) + req(DISC),
    "sparse-read-cache": flags() + opt(OPT_STRUCTURED) + opt(OPT_GO, info("")) +
    req(READ, 0, 65536) + req(READ, 65536, 131072, DF, cookie=2) +
    req(WRITE, 4096, 4096, cookie=3) + req(READ, 0, 262144, cookie=4) +
    req(CACHE, 0, 1048576, cookie=5) + req(CACHE, 1048576 - 512, 1024, cookie=6) +
    req(CACHE, 0, 0, cookie=7) + req(DISC),
    "options": flags() + opt(OPT_LIST) + opt(OPT_INFO, info("ro", (3,))) +
    opt(OPT_INFO, info("nosuch")) + opt(OPT_STARTTLS) + opt(99, b"xyz") +
    opt(OPT_LIST_META, meta("", [])) + opt(OPT_STRUCTURED) +
    opt(OPT_LIST_META, meta("", ["base:", "x-foo:bar"])) + opt(OPT_ABORT),
    "bad-lengths": flags() + opt(OPT_GO, info("")[:-1]) + opt(OPT_LIST, b"x") +
    opt(OPT_STRUCTURED) + opt(OPT_SET_META, meta("", ["base:allocation"]) + b"junk") +
    opt(OPT_GO, info("")) + req(READ, 1048576 - 512, 1024) + req(WRITE, 1 << 40, 16) +
    req(77) + req(READ, 0, 512, 0x100) + req(FLUSH, 1) + req(BSTATUS, 0, 0),
    "pipelined": flags() + opt(OPT_GO, info("")) +
    b"".join(req(WRITE if i % 2 else READ, i * 4096, 4096, cookie=i) for i in range(40)),
    "truncated-write": flags() + opt(OPT_EXPORT_NAME) + req(WRITE, 0, 4096)[:28 + 100],
    "bad-magic": flags() + opt(OPT_EXPORT_NAME) + b"\0" * 28,
}

outdir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "nbd-server")
os.makedirs(outdir, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(outdir, "seed-" + name), "wb") as f:
        f.write(data)
