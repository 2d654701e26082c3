#!/usr/bin/env bash
# ringblk's main job (`make demo`): a short, honest comparison of the AIO
# engines on a scratch image, printed as a table.
#
# 4 KiB random reads with `ringblk-img bench` under aio=threads, native,
# io_uring and auto, at depth 1 and 32, with O_DIRECT (cache=none) and
# through the page cache. Each run is sized by a short calibration run to
# take about RUN_SECONDS; the engines run interleaved REPS times and the
# table shows medians. The whole demo takes about 15 seconds.
#
# Environment: BUILD_DIR (default build), DEMO_DIR (default /var/tmp),
# DEMO_SIZE (default 256M), RUN_SECONDS (default 0.15, per run), REPS (default 3).
set -euo pipefail

BUILD_DIR=${BUILD_DIR:-build}
DEMO_DIR=${DEMO_DIR:-/var/tmp}
DEMO_SIZE=${DEMO_SIZE:-256M}
RUN_SECONDS=${RUN_SECONDS:-0.15}
REPS=${REPS:-3}
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

# What the runs say on stderr (engine warnings, failures), shown once at the end.
notes="$scratch/notes"
: >"$notes"

# One JSON run; prints "iops ns_per_io aio p50 p99" (latencies in ns), or
# nothing when the run failed (its message goes to the notes).
bench() { # cache depth engine count
    local out
    out=$("$img_tool" bench --output=json --random --seed=1 -t "$1" -d "$2" -i "$3" -c "$4" \
        -s 4k -f raw "$img" 2>>"$notes") || return 0
    awk -F': ' '
        /"iops"/       { gsub(/,/, "", $2); iops = $2 }
        /"ns-per-io"/  { gsub(/,/, "", $2); cpu = $2 }
        /"aio":/       { gsub(/[",]/, "", $2); aio = $2 }
        /"p50"/        { gsub(/,/, "", $2); p50 = $2 }
        /"p99"/        { gsub(/,/, "", $2); p99 = $2 }
        END { print iops, cpu, aio, p50, p99 }' <<<"$out"
}

# Requests for about RUN_SECONDS, from a short run (which also warms up);
# nothing when the engine cannot run here.
calibrate() { # cache depth engine
    local iops=
    read -r iops _ < <(bench "$1" "$2" "$3" 2000) || true
    [ -n "$iops" ] || return 0
    awk -v i="$iops" -v t="$RUN_SECONDS" 'BEGIN {
        n = int(i * t); if (n < 2000) n = 2000; if (n > 2000000) n = 2000000; print n }'
}

cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
fs=$(df -PT "$scratch" | awk 'NR == 2 { print $2 " on " $1 }')
echo "ringblk engine comparison: 4 KiB random reads from a $DEMO_SIZE file ($fs)"
echo "machine: $(nproc) CPUs${cpu_model:+ ($cpu_model)}, Linux $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
# Whether the file takes non-blocking I/O decides what aio=auto picks (docs/tools.md, info).
nowait=$("$img_tool" info --output=json "$img" | awk -F': ' '/"nowait"/ { print $2 }')
echo "the file takes non-blocking I/O (RWF_NOWAIT): ${nowait:-unknown}"
echo

engines=(threads native io_uring auto)
# The median of the numbers on stdin, one per line.
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

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
        declare -A count=() results=() used=()
        for engine in "${engines[@]}"; do
            if [ "$engine" = native ] && [ "$cache" != none ]; then
                continue
            fi
            c=$(calibrate "$cache" "$depth" "$engine")
            if [ -n "$c" ]; then
                count[$engine]=$c
            else
                count[$engine]=0    # cannot run here: see the notes
            fi
        done
        # Interleaved repetitions (A B C A B C ...), so that a burst of
        # other load hits every engine alike; the table shows medians.
        for ((rep = 0; rep < REPS; rep++)); do
            for engine in "${!count[@]}"; do
                [ "${count[$engine]}" -gt 0 ] || continue
                iops=
                read -r iops cpu u p50 p99 < <(bench "$cache" "$depth" "$engine" "${count[$engine]}") || true
                [ -n "$iops" ] || continue
                results[$engine]+="$iops $cpu $p50 $p99"$'\n'
                used[$engine]=$u
            done
        done
        for engine in "${engines[@]}"; do
            if [ -z "${count[$engine]:-}" ]; then
                printf '%-9s %5s  %-9s %s\n' "$label" "$depth" "$engine" \
                    "(needs O_DIRECT: Linux AIO blocks on buffered files)"
                continue
            fi
            if [ -z "${results[$engine]:-}" ]; then
                printf '%-9s %5s  %-9s %s\n' "$label" "$depth" "$engine" "(failed: see the notes below)"
                continue
            fi
            col() { printf '%s' "${results[$engine]}" | awk -v c="$1" 'NF { print $c }' | median; }
            awk -v l="$label" -v d="$depth" -v e="$engine" -v u="${used[$engine]}" \
                -v i="$(col 1)" -v c="$(col 2)" -v a="$(col 3)" -v b="$(col 4)" 'BEGIN {
                printf "%-9s %5s  %-9s %-9s %10.0f %11.2f %8.1f %8.1f\n",
                       l, d, e, u, i, c / 1000, a / 1000, b / 1000 }'
        done
        unset count results used
    done
done

cat <<EOF

Medians of $REPS interleaved runs of ringblk-img bench --output=json; CPU µs/IO is the
process's user+system time (getrusage, including worker threads) per request.
"used" is the engine the file driver picked (aio=auto chooses per file).
These figures are only comparable with each other, within this one run: the
same machine type varies 2-3x between instances, and other load moves them
(on a busy machine CPU µs/IO and p50 are steadier than IOPS).
For repeated, interleaved measurements against fio and QEMU: make bench.
EOF
if [ -s "$notes" ]; then
    echo
    echo "Notes from the runs:"
    sort -u "$notes" | sed 's/^/  /'
fi
# A busy machine (other builds, tests) makes every row slower and noisier.
awk -v n="$(nproc)" '$1 > n { printf "warning: the machine was busy during this run (load average %s on %d CPUs)\n", $1, n }' /proc/loadavg
