"""deepmir: differential detection of microbleeds, iron and calcifications."""

__version__ = "0.2.0"
