"""Which BIDS library discovers the inputs of ``deepmir predict``: import time and
time to index a synthetic BIDS dataset of many subjects.

The dataset (built under a temporary folder and deleted afterwards) holds
``--subjects`` subjects with three empty files each
(``sub-<id>/anat/sub-<id>_{T2w,swi,Chimap}.nii.gz``) and a
``dataset_description.json``. Each library runs in a fresh interpreter
(``sys.executable``), so that its import is measured cold (the file cache is
warm after the first of ``--repeats`` imports; the median is printed):

* ``pybids``: ``bids.BIDSLayout(root, validate=False)`` then one query per suffix;
* ``ancpbids``: ``ancpbids.load_dataset(root)`` then one query per suffix;
* ``bids2table``: ``bids2table.index_dataset(root)`` (an Arrow table);
* ``deepmir``: :func:`deepmir.io.bids.find_subjects` (what predict uses: the
  walk, ancpbids' name parsing and the choice of one file per modality);
* ``deepmir-one``: the same for one participant (``--participant-label``).

A library that is not installed, or that runs past ``--timeout`` seconds, is
reported as such. Run it (nice, one thread: the machine may be shared)::

    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/bench_discovery.py --subjects 10000

with a Python that has the libraries (``pip install pybids ancpbids bids2table``
in a scratch virtual environment; ``deepmir`` needs ``PYTHONPATH=src``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUFFIXES = ("T2w", "swi", "Chimap")

#: per library: the import, then the indexing of ``root`` (must leave the file count in ``n``)
LIBRARIES: dict[str, tuple[str, str]] = {
    "pybids": (
        "import bids",
        "layout = bids.BIDSLayout(root, validate=False)\n"
        "n = sum(len(layout.get(suffix=s, extension='.nii.gz')) for s in SUFFIXES)",
    ),
    "ancpbids": (
        "import ancpbids",
        "ds = ancpbids.load_dataset(root)\n"
        "n = sum(len(list(ds.query(suffix=s, extension='.nii.gz'))) for s in SUFFIXES)",
    ),
    "bids2table": (
        "import bids2table",
        "table = bids2table.index_dataset(root)\n"
        "n = sum(1 for s in table.column('suffix').to_pylist() if s in SUFFIXES)",
    ),
    "deepmir": (
        "import deepmir.io.bids as dbids",
        "refs = dbids.find_subjects(root)\nn = sum(len(r.files.modalities) for r in refs)",
    ),
    # one participant of the cohort, as a per-participant job (--participant-label) reads it
    "deepmir-one": (
        "import deepmir.io.bids as dbids",
        "refs = dbids.find_subjects(root, participants=['00042'])\n"
        "n = sum(len(r.files.modalities) for r in refs)",
    ),
}

IMPORT_ONLY = """
import time
t0 = time.perf_counter()
{imp}
print(time.perf_counter() - t0)
"""

INDEX = """
import json, sys, time
SUFFIXES = {suffixes!r}
root = sys.argv[1]
t0 = time.perf_counter()
{imp}
t1 = time.perf_counter()
{index}
t2 = time.perf_counter()
print(json.dumps({{"import_s": t1 - t0, "index_s": t2 - t1, "files": n}}))
"""


def build_dataset(root: Path, n_subjects: int) -> None:
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "synthetic", "BIDSVersion": "1.9.0"})
    )
    for i in range(1, n_subjects + 1):
        anat = root / f"sub-{i:05d}" / "anat"
        anat.mkdir(parents=True)
        for suffix in SUFFIXES:
            (anat / f"sub-{i:05d}_{suffix}.nii.gz").touch()


def measure(name: str, root: Path, repeats: int, timeout: float) -> dict[str, object]:
    imp, index = LIBRARIES[name]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    imports = []
    try:
        for _ in range(repeats):
            out = subprocess.run(
                [sys.executable, "-c", IMPORT_ONLY.format(imp=imp)],
                capture_output=True,
                text=True,
                check=True,
                env=env,
                timeout=timeout,
            )
            imports.append(float(out.stdout.strip().splitlines()[-1]))
    except subprocess.CalledProcessError as exc:
        return {"library": name, "error": exc.stderr.strip().splitlines()[-1]}
    code = INDEX.format(suffixes=SUFFIXES, imp=imp, index=index)
    try:
        out = subprocess.run(
            [sys.executable, "-c", code, str(root)],
            capture_output=True,
            text=True,
            check=True,
            env=env,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"library": name, "import_s": statistics.median(imports), "index_s": None}
    except subprocess.CalledProcessError as exc:
        return {"library": name, "error": exc.stderr.strip().splitlines()[-1]}
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {"library": name, "import_s": statistics.median(imports), **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=10000)
    parser.add_argument("--libraries", nargs="+", default=list(LIBRARIES), choices=LIBRARIES)
    parser.add_argument("--repeats", type=int, default=3, help="import timings (median)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per library")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="deepmir-bench-discovery-"))
    try:
        root = tmp / "bids"
        t0 = time.perf_counter()
        build_dataset(root, args.subjects)
        n_files = args.subjects * len(SUFFIXES)
        print(
            f"synthetic dataset: {args.subjects} subjects, {n_files} empty NIfTI files "
            f"(built in {time.perf_counter() - t0:.1f} s)"
        )
        print(f"{'library':<12} {'import s':>9} {'index s':>9} {'files':>7}")
        for name in args.libraries:
            r = measure(name, root, args.repeats, args.timeout)
            if "error" in r:
                print(f"{name:<12} not usable here: {r['error']}")
                continue
            index = r["index_s"]
            shown = f"{index:9.2f}" if isinstance(index, float) else f">{args.timeout:8.0f}"
            print(f"{name:<12} {r['import_s']:9.2f} {shown} {r.get('files', '-'):>7}")
    finally:
        shutil.rmtree(tmp)
    command = " ".join(["OMP_NUM_THREADS=1 nice -n 19", Path(sys.executable).name, *sys.argv])
    print(f"reproduce: {command}")


if __name__ == "__main__":
    main()
