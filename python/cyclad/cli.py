"""The ``cyclad`` command line."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cyclad")
    p.add_subparsers(dest="command", required=True)
    p.parse_args(argv)
    return 0
