"""Relevance filters (public name ``napari_lrp.filters``); implemented in :mod:`napari_lrp.lrp.filters`."""

from .lrp.filters import FILTER_SPEC_HELP, Amplify, Clamp, Filter, Identity, Pass, format_filter, parse_filter

__all__ = ["FILTER_SPEC_HELP", "Amplify", "Clamp", "Filter", "Identity", "Pass", "format_filter", "parse_filter"]
