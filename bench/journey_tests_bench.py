"""How long `journeyctl test` takes for 100 cases: the example suites' cases, repeated.

    python -m bench.journey_tests_bench [--cases 100] [--rounds 5]

Copies the cases of examples/journeys/tests/*.test.yaml into one file until it holds
`--cases` cases, then times loading that file and running every case (what
`journeyctl test FILE` does after Python starts), best and median of `--rounds` runs.
Prints one JSON line. No Kafka, no network.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from engine.testing.expect import run_files

ROOT = Path(__file__).resolve().parents[1]
SUITES = ROOT / "examples" / "journeys" / "tests"


def build(directory: Path, count: int) -> Path:
    """One test file per example journey, together holding `count` cases."""
    specs = [yaml.safe_load(p.read_text()) for p in sorted(SUITES.glob("*.test.yaml"))]
    pool = [(i, case) for i, spec in enumerate(specs) for case in spec["cases"]]
    chosen: list[list[dict[str, Any]]] = [[] for _ in specs]
    for n, (i, case) in zip(range(count), itertools.cycle(pool), strict=False):
        chosen[i].append({**copy.deepcopy(case), "name": f"{case['name']} #{n}"})
    for i, spec in enumerate(specs):
        out = {**spec, "cases": chosen[i]}
        for key in ("journey", "templates"):
            out[key] = str((SUITES / spec[key]).resolve())
        out["also"] = [str((SUITES / p).resolve()) for p in spec.get("also", [])]
        (directory / f"suite-{i}.test.yaml").write_text(yaml.safe_dump(out, sort_keys=False))
    return directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        files = sorted(str(p) for p in build(Path(tmp), args.cases).glob("*.test.yaml"))
        run_files(files)  # warm-up: imports, template loading, CEL compile caches
        times = []
        for _ in range(args.rounds):
            run = run_files(files)
            assert run.ok and len(run.results) == args.cases, run.summary()
            times.append(run.seconds)
    result = {
        "cases": args.cases,
        "best_seconds": round(min(times), 4),
        "median_seconds": round(statistics.median(times), 4),
        "median_ms_per_case": round(statistics.median(times) / args.cases * 1000, 3),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
