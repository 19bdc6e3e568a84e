"""``python -m cyclad.bench AREA``: run one bench area (or ``all``) and write JSON + markdown."""

from __future__ import annotations

import argparse
import importlib
import sys
import time

from cyclad.bench._harness import markdown_table, write_results

AREAS = ("aggregators", "coding", "compression")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cyclad.bench", description=__doc__)
    p.add_argument("area", choices=(*AREAS, "all"))
    p.add_argument("--quick", action="store_true", help="small sizes only (a smoke run)")
    p.add_argument("--out", default="bench/results", help="directory for JSON and markdown")
    args = p.parse_args(argv)
    areas = AREAS if args.area == "all" else (args.area,)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for area in areas:
        mod = importlib.import_module(f"cyclad.bench.{area}")
        records = mod.run(quick=args.quick)
        sys.stdout.write(f"\n## {area}\n\n" + markdown_table(records))
        jpath, mpath = write_results(records, args.out, f"{area}-{stamp}")
        sys.stdout.write(f"\nwrote {jpath} and {mpath}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
