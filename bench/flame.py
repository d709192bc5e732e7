"""Summarises a py-spy ``--format raw`` profile (collapsed stacks) as the few lines that say
where a worker's time goes: the share of samples by role (the sender thread, the job's
claim/record loop, the rest) and the functions with the most samples, self and inclusive.

Run as ``python -m bench.flame PROFILE.txt [TOP]``; ``bench.run --profile DIR`` writes such
files and puts this summary of the throughput and fan-out GIL profiles into RESULTS.md. Why a
summary and not the flame graph itself: the graph is megabytes of SVG that nobody diffs; the
top items are what a change is judged by, and they fit in the results file beside the figures.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

#: Which part of the worker a stack belongs to, by the first of these frames it contains.
ROLES = (("SendLoop.run", "the sender thread (libcurl, sign, hand the result back)"),
         ("Pump.run", "the job's loop (claim, fan out, record)"),
         ("Ticker.run", "the worker's heartbeat"),
         ("_watch_doorbell", "the doorbell thread"))


def _frame(raw: str) -> str:
    """``Pump._record (plugin/pump.py:741)`` -> ``Pump._record (pump.py)``."""
    name, _, where = raw.partition(" (")
    return f"{name} ({where.split(':')[0].rsplit('/', 1)[-1]})" if where else name


def summarise(path: Path, top: int = 12) -> list[str]:
    """The summary's lines (Markdown), or one line saying the profile is empty."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    roles: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        raw_frames = stack.split(";")
        frames = [_frame(raw) for raw in raw_frames]
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
        roles[next((label for marker, label in ROLES if any(marker in f for f in raw_frames)),
                   "other")] += samples
    if not total:
        return [f"- {path.name}: no samples"]
    out = [f"- {path.name}: {total:,} samples"]
    out.append("- by role: " + ", ".join(f"{label} {n / total:.0%}"
                                        for label, n in roles.most_common()))
    out.append(f"- top {top} by own samples: " + "; ".join(
        f"`{name}` {n / total:.1%}" for name, n in own.most_common(top)))
    wanted = [(name, n) for name, n in inclusive.most_common()
              if not name.startswith(_NOISE)][:top]
    out.append(f"- top {top} inclusive (below the worker's entry frames): " + "; ".join(
        f"`{name}` {n / total:.1%}" for name, n in wanted))
    return out


#: Frames every stack of a role shares (threading, click, RQ): inclusive counts that say nothing.
_NOISE = ("Thread.", "_run_module_as_main", "_run_code", "<module>", "main (", "Command.",
          "Group.", "Context.", "WebhooksGroup.", "pass_context", "with_appcontext", "worker (",
          "run_worker", "BaseWorker.", "SimpleWorker.", "Job.", "pump (", "Pump.run",
          "SendLoop.run")


def main() -> None:
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 12
    print("\n".join(summarise(Path(sys.argv[1]), top)))


if __name__ == "__main__":
    main()
