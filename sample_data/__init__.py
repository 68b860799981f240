"""The sample cohort and the sample model that ship with napari-lrp (see README)."""
