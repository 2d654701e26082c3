#!/usr/bin/env bash
# ringblk's main job (`make demo`): a short, honest comparison of the AIO
# engines on a scratch image, printed as a table.
#
# 4 KiB random reads with `ringblk-img bench` under aio=threads, native,
# io_uring and auto, at depth 1 and 32, with O_DIRECT (cache=none) and
# through the page cache. Each run is sized by a short calibration run to
# take about RUN_SECONDS; the whole demo takes a few seconds.
#
# Environment: BUILD_DIR (default build), DEMO_DIR (default /var/tmp),
# DEMO_SIZE (default 256M), RUN_SECONDS (default 0.3).
set -euo pipefail

BUILD_DIR=${BUILD_DIR:-build}
DEMO_DIR=${DEMO_DIR:-/var/tmp}
DEMO_SIZE=${DEMO_SIZE:-256M}
RUN_SECONDS=${RUN_SECONDS:-0.3}
img_tool="$BUILD_DIR/tools/ringblk-img"

if [ ! -x "$img_tool" ]; then
    echo "demo: $img_tool is not built; run 'make' first" >&2
    exit 1
fi

scratch=$(mktemp -d "$DEMO_DIR/ringblk-demo.XXXXXX")
trap 'rm -rf "$scratch"' EXIT INT TERM
img="$scratch/demo.img"

# Fully allocated (preallocation=full writes every block), so that O_DIRECT
# reads reach the device instead of returning zeroes for holes.
"$img_tool" create -q -f raw -o preallocation=full "$img" "$DEMO_SIZE"

# One JSON run; prints "iops ns_per_io aio p50 p99" (latencies in ns).
bench() { # cache depth engine count
    "$img_tool" bench --output=json --random --seed=1 -t "$1" -d "$2" -i "$3" -c "$4" \
        -s 4k -f raw "$img" |
    awk -F': ' '
        /"iops"/       { gsub(/,/, "", $2); iops = $2 }
        /"ns-per-io"/  { gsub(/,/, "", $2); cpu = $2 }
        /"aio":/       { gsub(/[",]/, "", $2); aio = $2 }
        /"p50"/        { gsub(/,/, "", $2); p50 = $2 }
        /"p99"/        { gsub(/,/, "", $2); p99 = $2 }
        END { print iops, cpu, aio, p50, p99 }'
}

# Requests for about RUN_SECONDS, from a short run (which also warms up).
calibrate() { # cache depth engine
    local iops
    read -r iops _ < <(bench "$1" "$2" "$3" 2000)
    awk -v i="$iops" -v t="$RUN_SECONDS" 'BEGIN {
        n = int(i * t); if (n < 2000) n = 2000; if (n > 2000000) n = 2000000; print n }'
}

cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
fs=$(df -PT "$scratch" | awk 'NR == 2 { print $2 " on " $1 }')
echo "ringblk engine comparison: 4 KiB random reads from a $DEMO_SIZE file ($fs)"
echo "machine: $(nproc) CPUs${cpu_model:+ ($cpu_model)}, Linux $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo

printf '%-9s %5s  %-9s %-9s %10s %11s %8s %8s\n' \
    "cache" "depth" "aio" "used" "IOPS" "CPU µs/IO" "p50 µs" "p99 µs"
for cache in none writeback; do
    if [ "$cache" = writeback ]; then
        # Read the whole file once so that cached runs find it in the page cache.
        cat "$img" >/dev/null
        label="cached"
    else
        label="O_DIRECT"
    fi
    for depth in 1 32; do
        for engine in threads native io_uring auto; do
            if [ "$engine" = native ] && [ "$cache" != none ]; then
                printf '%-9s %5s  %-9s %s\n' "$label" "$depth" "$engine" \
                    "(needs O_DIRECT: Linux AIO blocks on buffered files)"
                continue
            fi
            count=$(calibrate "$cache" "$depth" "$engine")
            read -r iops cpu used p50 p99 < <(bench "$cache" "$depth" "$engine" "$count")
            awk -v l="$label" -v d="$depth" -v e="$engine" -v u="$used" -v i="$iops" \
                -v c="$cpu" -v a="$p50" -v b="$p99" 'BEGIN {
                printf "%-9s %5s  %-9s %-9s %10.0f %11.2f %8.1f %8.1f\n",
                       l, d, e, u, i, c / 1000, a / 1000, b / 1000 }'
        done
    done
done

cat <<EOF

IOPS and latency come from ringblk-img bench --output=json; CPU µs/IO is the
process's user+system time (getrusage, including worker threads) per request.
"used" is the engine the file driver picked (aio=auto chooses per file).
These figures are only comparable with each other, within this one run: the
same machine type varies 2-3x between instances, and other load moves them.
For repeated, interleaved measurements against fio and QEMU: make bench.
EOF
# A busy machine (other builds, tests) makes every row slower and noisier.
awk -v n="$(nproc)" '$1 > n { printf "warning: the machine was busy during this run (load average %s on %d CPUs)\n", $1, n }' /proc/loadavg
