"""Benchmark: apparent CMB volume on SWI versus TE (blooming), 1 mm phantom.

Prints the figures the README quotes (Liu et al., Radiology 2012 report about
2.3x from TE 20 to 40 ms). Run: ``.venv/bin/python benchmarks/bench_blooming.py``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from deepmir.labels import CMB
from deepmir.phantom.anatomy import Grid
from deepmir.phantom.geometry import Ellipsoid
from deepmir.phantom.params import Lesion, draw_subject_params
from deepmir.phantom.render import render_subject, subject_anatomy


def main() -> None:
    params = draw_subject_params(7, 0, subject_anatomy, "full")
    anatomy = subject_anatomy(Grid.make("full"), params.deformation)
    wm = ndimage.binary_erosion((anatomy.wm > 0.95) & (anatomy.region == 0), iterations=6)
    points = np.argwhere(wm)
    centre = tuple(float(c) for c in points[len(points) // 2])
    print("diameter_mm  TE_ms  true_mm3  swi_dark_mm3  t2w_dark_mm3")
    for diameter in (3.0, 5.0):
        cmb = Lesion(
            lesion_id=1,
            label=CMB,
            region="lobar",
            host="white matter",
            ellipsoids=(Ellipsoid(centre, (diameter / 2,) * 3, (0, 0, 0)),),
            delta_chi_ppm=1.0,
            r2star_per_s=150.0,
            t2_s=0.055,
            pd=None,
        )
        volumes = []
        for te in (0.020, 0.040):
            acq = dataclasses.replace(
                params.acquisition, swi_te_s=te, swi_snr=1000.0, t2w_snr=1000.0
            )
            images = render_subject(
                dataclasses.replace(params, lesions=(cmb,), veins=(), acquisition=acq), anatomy
            )
            lesion = images.dseg == CMB
            near = ndimage.binary_dilation(lesion, iterations=8)
            ring = ndimage.binary_dilation(lesion, iterations=10) & ~near

            def dark(img: np.ndarray, ring=ring, near=near) -> int:
                return int((near & (img < 0.5 * np.median(img[ring]))).sum())

            volumes.append(dark(images.swi))
            print(
                f"{diameter:11.0f}  {te * 1e3:5.0f}  {lesion.sum():8d}  {volumes[-1]:12d}  "
                f"{dark(images.t2w):12d}"
            )
        print(f"  SWI apparent volume ratio TE 40/20 ms: {volumes[1] / max(volumes[0], 1):.2f}")
    print("reproduce: .venv/bin/python benchmarks/bench_blooming.py")


if __name__ == "__main__":
    main()
