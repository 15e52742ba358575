"""``python -m benchmarks SUITE [...]``: run one benchmark suite."""

from __future__ import annotations

import sys


def main() -> None:
    suites = {
        "speed": "benchmarks.speed",
        "quality": "benchmarks.quality",
        "ablation": "benchmarks.ablation",
        "agent": "benchmarks.agent",
        "structured": "benchmarks.structured",
        "answers": "benchmarks.answers",
        "precision": "benchmarks.precision",
        "ttft": "benchmarks.ttft",
        "target-runtime": "benchmarks.target_runtime",
    }
    if len(sys.argv) < 2 or sys.argv[1] not in suites:
        sys.exit(f"usage: python -m benchmarks {{{','.join(suites)}}} [options]  (--help after a suite name)")
    import importlib

    module = importlib.import_module(suites[sys.argv[1]])
    module.main(sys.argv[2:])


if __name__ == "__main__":
    main()
