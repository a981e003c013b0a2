"""Write a stage's config sections (`params.sections`) to the JSON file its CLI reads."""

import json
import sys
from pathlib import Path


def write_json(sections: dict, path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(sections, f, indent=2, sort_keys=True)
        f.write("\n")
    print(f"wrote {path}: sections {', '.join(sorted(sections))}", file=sys.stderr)


if __name__ == "__main__":
    sys.stderr = open(snakemake.log[0], "w", buffering=1)
    write_json(dict(snakemake.params.sections), snakemake.output[0])
