"""Run the benchmarks and write `bench/results/<name>.json` plus a short table."""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def discover() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all of {discover()})")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke run)")
    args = parser.parse_args(argv)
    names = args.names or discover()
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows: list[list[Any]] = []
    failed = 0
    for name in names:
        module = importlib.import_module(f"bench.bench_{name}")
        print(f"== bench {name}", flush=True)
        started = time.perf_counter()
        try:
            result: dict[str, Any] = module.run(quick=args.quick)
        except Exception as exc:  # a broken benchmark is reported, the others still run
            failed += 1
            print(f"   FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        result.setdefault("meta", {}).update(
            {
                "wall_s": round(time.perf_counter() - started, 2),
                "python": platform.python_version(),
                "machine": platform.machine(),
                "cpus": __import__("os").cpu_count(),
                "quick": args.quick,
            }
        )
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2, default=str))
        for row in result.get("table", []):
            rows.append([name, *row])
    if rows:
        widths = [
            max(len(str(r[i])) for r in [["bench", "measure", "value", "target"], *rows]) for i in range(4)
        ]
        header = ["bench", "measure", "value", "target"]
        print()
        for r in [header, *rows]:
            print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=False)))
    print(f"\nresults in {RESULTS}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
