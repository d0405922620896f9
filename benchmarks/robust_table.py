"""Print the README / model card robustness table from bench_robust JSON files.

    python benchmarks/robust_table.py NEW.json [OLD.json]

Per set and class: sensitivity / precision / F1 of NEW (OLD's F1 in brackets,
bold when NEW's is up by 0.05 or more), false calcifications per subject;
then the mean lesion F1 over every set and class, and the held-out ECE.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

CLASSES = ("cmb", "iron", "calcification")
NAMES = {
    "in-distribution": "in distribution",
    "b0-1.5t": "1.5 T",
    "b0-7t": "7 T",
    "slice-3mm": "3 mm slices",
    "qsm-cg": "QSM by CG",
    "bg-vsharp": "V-SHARP",
    "swi-swan": "SWAN-like SWI",
    "atrophy": "atrophy",
    "in-distribution:swi+qsm": "SWI + QSM only",
    "in-distribution:swi": "SWI only",
    "in-distribution:no-mask": "no brain mask (derived)",
    "in-distribution:swi-no-mask": "SWI only, no mask",
}


def rows(path: Path) -> dict[str, dict[str, Any]]:
    return {r["set"]: r for r in json.loads(path.read_text())["rows"] if r.get("served")}


def mean_f1(table: dict[str, dict[str, Any]]) -> float:
    f1 = [r[c]["f1"] for r in table.values() for c in CLASSES if r[c]["f1"] is not None]
    return sum(f1) / len(f1)


def main(argv: list[str]) -> int:
    new = rows(Path(argv[0]))
    old = rows(Path(argv[1])) if len(argv) > 1 else {}
    print("| set | CMB | iron | calcification | false calc / subject |")
    print("|---|---|---|---|---|")
    for name, r in new.items():
        cells = []
        for c in CLASSES:
            m = r[c]
            f1 = f"{m['f1']:.2f}"
            if name in old:
                before = old[name][c]["f1"]
                if m["f1"] - before >= 0.05 - 1e-9:
                    f1 = f"**{f1}**"
                f1 += f" ({before:.2f})"
            cells.append(f"{m['sensitivity']:.2f} / {m['precision']:.2f} / {f1}")
        fp = r["calcification"]["fp_per_subject"]
        print(f"| {NAMES.get(name, name)} | {' | '.join(cells)} | {fp:.2f} |")
    print(f"\nmean lesion F1 {mean_f1(new):.4f}" + (f" (old {mean_f1(old):.4f})" if old else ""))
    for path in argv[:2]:
        ece = json.loads(Path(path).read_text())["held_out_calibration"]
        print(path, "held-out ECE", {c: e["ece"] for c, e in ece.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
