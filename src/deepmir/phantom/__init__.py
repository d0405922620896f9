"""The physics phantom: anatomy (:mod:`.anatomy`), parameter record
(:mod:`.params`), forward model (:mod:`.render`, :mod:`.scanner`) and dataset
writer (:mod:`.simulate`). Nothing is imported here, so that the command
line reads :mod:`.presets` without loading the physics."""
