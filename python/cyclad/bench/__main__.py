"""``python -m cyclad.bench AREA``: run one bench area (or ``all``) and write JSON + markdown."""

from __future__ import annotations

import argparse
import importlib
import sys
import time

from cyclad.bench._harness import machine_line, markdown_table, write_results

AREAS = ("aggregators", "coding", "compression")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cyclad.bench", description=__doc__)
    p.add_argument("area", choices=(*AREAS, "all"))
    p.add_argument("--quick", action="store_true", help="small sizes only (a smoke run)")
    p.add_argument("--out", default="bench/results", help="directory for JSON and markdown")
    p.add_argument("--n", type=int, help="aggregators only: one size, n rows (with --D)")
    p.add_argument("--D", type=float, help="aggregators only: one size, D columns (with --n)")
    p.add_argument(
        "--hostile",
        action="store_true",
        help="aggregators only: just the hostile-row cases (f = n/4 rows of NaN or +-1e300, "
        "float64) against the same rules on the clean matrix, at --n/--D (default 20, 1e6)",
    )
    args = p.parse_args(argv)
    if (args.n is None) != (args.D is None):
        p.error("--n and --D go together")
    if (args.n is not None or args.hostile) and args.area != "aggregators":
        p.error("--n/--D and --hostile are supported by the aggregators area only")
    areas = AREAS if args.area == "all" else (args.area,)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for area in areas:
        mod = importlib.import_module(f"cyclad.bench.{area}")
        if args.hostile:
            n, d = (20, 1_000_000) if args.n is None else (args.n, int(args.D))
            records = mod.bench_hostile(n, d)
        elif args.n is not None:
            records = mod.bench_size(args.n, int(args.D))
        else:
            records = mod.run(quick=args.quick)
        sys.stdout.write(f"\n## {area}\n\n{machine_line()}\n\n" + markdown_table(records))
        jpath, mpath = write_results(records, args.out, f"{area}-{stamp}")
        sys.stdout.write(f"\nwrote {jpath} and {mpath}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
