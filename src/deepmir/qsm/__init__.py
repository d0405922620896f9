"""QSM and SWI numerics shared by the phantom (:mod:`deepmir.phantom`) and the
raw-GRE input path of ``deepmir predict`` (:mod:`deepmir.qsm.gre`).

* :mod:`deepmir.qsm.dipole`: the dipole kernel and closed-form inversions
  (TKD, Tikhonov);
* :mod:`deepmir.qsm.background`: SHARP / V-SHARP background-field removal;
* :mod:`deepmir.qsm.inversion`: the CG (iLSQR-like) weighted least-squares
  dipole inversion;
* :mod:`deepmir.qsm.unwrap`: Laplacian phase unwrapping;
* :mod:`deepmir.qsm.gre`: SWI and QSM from raw GRE magnitude and phase.

All hand-written in a few FFTs (scipy.fft): the maintained QSM toolboxes
(QSMxT, STI Suite, MEDI, SEPIA) are MATLAB or containers, not importable.
"""
