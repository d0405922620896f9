"""QC reports: self-contained HTML per subject and a cohort index."""
