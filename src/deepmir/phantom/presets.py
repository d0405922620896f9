"""Names of the simulator's presets and held-out shifts (light: read by the command line)."""

#: held-out factors of the robustness benchmark (never drawn with shift "none")
SHIFTS = ("b0-1.5t", "b0-7t", "slice-3mm", "qsm-cg", "bg-vsharp", "swi-swan", "atrophy")
PRESETS = ("narrow", "randomized")
