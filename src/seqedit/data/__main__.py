"""`python -m seqedit.data OUT_DIR [--seed 0 --n-records 400 ...]`: write the synthetic world.

A standalone convenience; the workflow uses `seqedit world --config ...` (seqedit.cli).
"""

from __future__ import annotations

import argparse
from dataclasses import fields

from seqedit.data.world import WorldConfig, write_world


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write counterfact.json, zsre.json and corpus.txt.")
    parser.add_argument("out_dir")
    for f in fields(WorldConfig):
        parser.add_argument("--" + f.name.replace("_", "-"), type=int, default=f.default)
    args = vars(parser.parse_args(argv))
    out_dir = args.pop("out_dir")
    for path in write_world(WorldConfig(**args), out_dir).values():
        print(path)


if __name__ == "__main__":
    main()
