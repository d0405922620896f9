"""The physics phantom: anatomy, parameter record, forward model, dataset writer."""

from deepmir.phantom.params import SubjectParams, draw_subject_params
from deepmir.phantom.render import SubjectImages, render_subject, subject_anatomy
from deepmir.phantom.simulate import SimulationConfig, simulate_dataset

__all__ = [
    "SimulationConfig",
    "SubjectImages",
    "SubjectParams",
    "draw_subject_params",
    "render_subject",
    "simulate_dataset",
    "subject_anatomy",
]
