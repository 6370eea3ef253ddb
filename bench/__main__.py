"""``python -m bench [--config FILE] [--events N] [--out FILE] [--only NAME ...]``: the benchmark
(``bench.run``); ``zhongtai bench`` runs this."""

from __future__ import annotations

import argparse
import sys

from config import load_settings

from .run import main


def cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--config", help="YAML file merged over config/defaults.yaml")
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--out", default="bench/results/latest.json")
    p.add_argument("--only", nargs="*", help="subset of the contenders (bench/README.md)")
    a = p.parse_args(argv)
    return main(load_settings(a.config), events=a.events, out=a.out, only=a.only)


if __name__ == "__main__":
    sys.exit(cli())
