"""Incrementality experiments: geo holdouts planned (:mod:`.design`), run and restored as change requests
(:mod:`.lifecycle`), read with a scaled-control difference-in-differences (:mod:`.analysis`) and fed
back to the model as calibration points."""
