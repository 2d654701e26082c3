#!/usr/bin/env python3
# The aio=auto engine matrix (docs/devel/performance.md, "aio=auto"):
# 4 KiB random reads with ringblk-img bench, each engine per target x depth x
# cache mode, engines interleaved (A B C A B C), 3 repetitions, medians.
# Usage: bench/auto-matrix.py [path/to/ringblk-img]; TARGETS=disk,cached,...
# picks targets; AUTO_DIR (default /var/tmp/ringblk-auto) holds the 1 GiB
# disk.img, /dev/shm/ringblk-auto.img (512 MiB) and /dev/zram0 must be
# prepared (filled with random data) beforehand. A run that does not finish
# in 20 s is reported as HANG and left out of the median.
import json, os, subprocess, statistics, sys
IMG = sys.argv[1] if len(sys.argv) > 1 else "build/tools/ringblk-img"
DIR = os.environ.get("AUTO_DIR", "/var/tmp/ringblk-auto")
DISK = DIR + "/disk.img"
SHM = "/dev/shm/ringblk-auto.img"
ZRAM = "/dev/zram0"
targets = [t for t in [  # name, file, direct, count d1, count d32
    ("disk", DISK, True, 8000, 40000),
    ("cached", DISK, False, 100000, 200000),
    ("tmpfs-direct", SHM, True, 60000, 200000),
    ("tmpfs", SHM, False, 60000, 200000),
    ("zram-direct", ZRAM, True, 60000, 200000),
    ("zram", ZRAM, False, 60000, 200000),
] if t[0] in os.environ.get("TARGETS", "disk,cached,tmpfs-direct,tmpfs,zram-direct,zram").split(",")]
engines = [  # label, -i, env
    ("threads", "threads", {}),
    ("native", "native", {}),
    ("io_uring", "io_uring", {"RINGBLK_AIO_ASYNC_PUNT": "off"}),
    ("io_uring+async", "io_uring", {"RINGBLK_AIO_ASYNC_PUNT": "on"}),
    ("auto", "auto", {}),
]
subprocess.run(["dd", "if=" + DISK, "of=/dev/null", "bs=1M", "status=none"])
res = {}
for tname, path, direct, c1, c32 in targets:
    for depth, count in ((1, c1), (32, c32)):
        for rep in range(3):
            for label, aio, env in engines:
                if label == "native" and not direct:
                    continue
                cmd = [IMG, "bench", "-c", str(count), "-d", str(depth), "--random",
                       "-i", aio, "--output=json"]
                if direct:
                    cmd += ["-t", "none"]
                cmd.append(path)
                e = dict(os.environ, **env)
                try:
                    p = subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=20)
                except subprocess.TimeoutExpired:
                    print("HANG", label, " ".join(cmd), env, file=sys.stderr, flush=True)
                    continue
                if p.returncode:
                    print("FAIL", cmd, p.stderr, file=sys.stderr)
                    continue
                j = json.loads(p.stdout)
                k = (tname, depth, label)
                res.setdefault(k, []).append((j["iops"], j["cpu"]["ns-per-io"], j["aio"],
                                               j.get("nowait")))
        for label, _, _ in engines:
            k = (tname, depth, label)
            if k in res:
                v = res[k]
                print(f"{tname:13} d{depth:<2} {label:15} iops={statistics.median(x[0] for x in v):10.0f} "
                      f"cpu/io={statistics.median(x[1] for x in v):7.0f}ns aio={v[0][2]} nowait={v[0][3]} "
                      f"runs={[round(x[0]) for x in v]}", flush=True)
json.dump({"|".join(map(str, k)): v for k, v in res.items()},
          open(DIR + "/results.json", "w"), indent=1)
