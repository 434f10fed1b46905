#!/usr/bin/env python3
"""Live traffic through the lab's load balancer until a stop file appears.

    traffic_bg.py --url URL --stop-file F --summary S [--rate 100] [--max-seconds 600]

Runs tests/lab/traffic.py's TrafficRecorder, stops it once F exists (or after
--max-seconds), writes its summary as JSON to S and exits 1 if a request failed.
Molecule's canary converge starts it in the background (async) before the
deploy and touches F afterwards: the canary's analyses need live requests, and
none of them may fail.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests", "lab"))

from traffic import TrafficRecorder  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--stop-file", required=True)
    parser.add_argument("--summary", required=True)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    args = parser.parse_args(argv)
    if os.path.exists(args.stop_file):
        os.unlink(args.stop_file)
    deadline = time.monotonic() + args.max_seconds
    recorder = TrafficRecorder(args.url, rate=args.rate)
    recorder.start()
    try:
        while not os.path.exists(args.stop_file) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        summary = recorder.stop()
        with open(args.summary, "w", encoding="utf-8") as out:
            out.write(summary.to_json(indent=2))
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
