"""The label table of the data contract (``docs/data-contract.md``).

Indices are fixed: every file deepmir reads or writes uses them.
Veins are never labelled; they are mimics a detector must reject.
"""

from __future__ import annotations

BACKGROUND = 0
CMB = 1
IRON = 2
CALCIFICATION = 3

#: index -> name, in the order of ``dseg.tsv``.
LABELS: dict[int, str] = {
    BACKGROUND: "background",
    CMB: "cmb",
    IRON: "iron",
    CALCIFICATION: "calcification",
}

#: The lesion classes (every label but background).
LESION_CLASSES: dict[int, str] = {k: v for k, v in LABELS.items() if k != BACKGROUND}

NAME_TO_INDEX: dict[str, int] = {v: k for k, v in LABELS.items()}

#: MARS location categories (Gregoire et al. 2009) used in ``lesions.tsv``.
REGIONS = ("lobar", "deep", "infratentorial")


def dseg_tsv() -> str:
    """The text of a BIDS ``dseg.tsv`` look-up table for the label table."""
    lines = ["index\tname"] + [f"{k}\t{v}" for k, v in LABELS.items()]
    return "\n".join(lines) + "\n"
