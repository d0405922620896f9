"""Cohort scale: Dask execution, resume (per-subject provenance), group-level outputs.

* :mod:`deepmir.cohort.provenance`: what made a subject's outputs (model,
  version, options, input files), written last, so a rerun skips the
  subjects whose outputs are current;
* :mod:`deepmir.cohort.execute`: one task per subject, serially or on a Dask
  cluster (a local one, or an existing scheduler such as dask-jobqueue's);
* :mod:`deepmir.cohort.group`: the cohort census, index and dataset
  description, rebuilt from what is on disk (array jobs and resumed runs
  compose).
"""
