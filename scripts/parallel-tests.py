#!/usr/bin/env python3
"""Runs the suite's test binaries side by side, and reports every failure.

Usage: scripts/parallel-tests.py JOBS  (cargo's JSON build messages on stdin)

Reads the test executables from `cargo test --no-run --message-format=json`, then runs them
JOBS at a time, from the package root (as `cargo test` does), the slowest of the last run
first. Each binary's output is printed whole when it ends, so that outputs never interleave.
Most of the suite waits on throwaway databases and clients rather than on the CPU, so
binaries side by side finish sooner than one after another. Exits non-zero when any binary
failed, after naming each.
"""

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

TIMINGS = os.path.join("target", "test-timings.json")


def executables(messages):
    found = []
    for line in messages:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if message.get("reason") != "compiler-artifact":
            continue
        if not message.get("profile", {}).get("test") or not message.get("executable"):
            continue
        target = message["target"]
        name = "/".join(filter(None, [target["kind"][0], target["name"]]))
        found.append((name, message["executable"]))
    return found


def run(name, executable):
    started = time.monotonic()
    done = subprocess.run(
        [executable], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False
    )
    return name, done.returncode, done.stdout.decode("utf-8", "replace"), time.monotonic() - started


def main():
    jobs = int(sys.argv[1])
    binaries = executables(sys.stdin)
    try:
        with open(TIMINGS) as f:
            last = json.load(f)
    except (OSError, ValueError):
        last = {}
    binaries.sort(key=lambda b: -last.get(b[0], 0.0))
    failed, timings, tests = [], {}, [0, 0]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        running = [pool.submit(run, *b) for b in binaries]
        for finished in as_completed(running):
            name, code, output, seconds = finished.result()
            print(f"\n==== {name} ({seconds:.1f} s)", flush=True)
            print(output, end="", flush=True)
            timings[name] = seconds
            for line in output.splitlines():
                if line.startswith("test result:"):
                    words = line.split()
                    tests[0] += int(words[3])
                    tests[1] += int(words[5])
            if code != 0:
                failed.append(name)
    os.makedirs("target", exist_ok=True)
    with open(TIMINGS, "w") as f:
        json.dump(timings, f, indent=1, sort_keys=True)
    print(f"\n{len(binaries)} test binaries, {tests[0]} tests passed, {tests[1]} failed")
    for name in failed:
        print(f"FAILED: {name}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
