#!/usr/bin/env python3
"""Summarise py-spy raw (collapsed) profiles: where the samples went.

    BENCH_PROFILE=/tmp/prof bench/burst.py --runs 1000
    bench/pyspy_summary.py /tmp/prof/burst-*.txt [--top 25]

Prints, per process kind (server, agent, shepherd: told apart by the root
frames), the functions with the most samples on the stack (inclusive) and at
the top of the stack (self).
"""

import argparse
import collections
import re


def kind(procs, frames):
    """server, agent or shepherd, from the innermost ``process PID:"cmdline"`` frame."""
    cmd = procs[-1] if procs else ""
    if "apsis_lite.agent" in cmd or " agent " in cmd:
        text = ";".join(frames)
        return "shepherd" if ("shepherd_loop" in text or "_become_shepherd" in text) else "agent"
    return "server"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("files", nargs="+")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    incl = collections.defaultdict(collections.Counter)
    selfc = collections.defaultdict(collections.Counter)
    totals = collections.Counter()
    for path in args.files:
        with open(path) as f:
            for line in f:
                stack, _, count = line.rstrip("\n").rpartition(" ")
                if not stack:
                    continue
                n = int(count)
                parts = stack.split(";")
                procs = [fr for fr in parts if fr.startswith("process ")]
                frames = [re.sub(r" \(.*/", " (", fr) for fr in parts if not fr.startswith("process ")]
                k = kind(procs, frames)
                totals[k] += n
                for fr in set(frames):
                    incl[k][fr] += n
                if frames:
                    selfc[k][frames[-1]] += n
    for k, total in totals.most_common():
        print(f"== {k}: {total} samples")
        print("  inclusive:")
        for fr, n in incl[k].most_common(args.top):
            print(f"    {n / total * 100:5.1f}%  {fr}")
        print("  self:")
        for fr, n in selfc[k].most_common(args.top // 2):
            print(f"    {n / total * 100:5.1f}%  {fr}")


if __name__ == "__main__":
    main()
