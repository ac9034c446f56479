#!/usr/bin/env python3
"""How busy a command keeps the machine's cores, every 100 ms, and the core-seconds it left idle.

    tools/cpu_timeline.py [--cores N] -- .build/release/syncledger rebuild --store STORE --timings

Runs the command (its output goes to stderr), samples the CPU time of its process (all threads,
from /proc/PID/stat) every 100 ms, and prints one line of cores in use per interval, then
`wall`, `cpu` and `idle core-s`: over the intervals, the sum of cores x the interval's length
less the CPU time used in it, where cores is the machine's (os.cpu_count()) unless --cores
says otherwise (CPU time is counted in clock ticks, 10 ms, so one interval may show a little
more than the cores, and the next a little less). A pipelined rebuild
whose stages keep every core busy has little idle time; stalls (a stage waiting for the disk,
a single-threaded tail) show as intervals below the core count. BENCHMARKS.md (stop 44) uses it
to compare a rebuild with and without its writeback helper (SYNCLEDGER_REBUILD_WRITEBACK=0).
Linux only. CPU time of children the command starts is not counted.
"""
import os
import subprocess
import sys
import time

INTERVAL = 0.1


def cpu_seconds(pid, ticks):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def main(argv):
    cores = os.cpu_count() or 1
    if argv[:1] == ["--cores"]:
        cores, argv = int(argv[1]), argv[2:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        sys.exit("usage: tools/cpu_timeline.py [--cores N] -- COMMAND [ARGS...]")
    ticks = os.sysconf("SC_CLK_TCK")
    start = time.monotonic()
    child = subprocess.Popen(argv, stdout=sys.stderr)
    used, last, then = [], 0.0, start
    while True:
        time.sleep(INTERVAL)
        # WNOWAIT: an ended child stays a zombie, so its final CPU time can still be read.
        ended = os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        now, at = cpu_seconds(child.pid, ticks), time.monotonic()
        used.append((now - last, at - then))  # CPU seconds over the interval's own length
        last, then = now, at
        if ended:
            break
    status = child.wait()
    wall = time.monotonic() - start
    idle = sum(max(0.0, cores * dt - u) for u, dt in used)
    print(" ".join(f"{u / dt:.1f}" for u, dt in used))
    print(f"wall {wall:.2f} s cpu {last:.2f} s idle core-s {idle:.2f} (cores {cores}, exit {status})")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
