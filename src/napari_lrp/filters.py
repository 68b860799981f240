"""Relevance filters (public name ``napari_lrp.filters``); implemented in :mod:`napari_lrp.lrp.filters`."""

from .lrp.filters import (
    FILTER_KINDS,
    FILTER_SPEC_HELP,
    Amplify,
    Clamp,
    Filter,
    Identity,
    Pass,
    default_grid,
    filters_from_specs,
    format_filter,
    heatmap,
    make_filter,
    parse_filter,
)

__all__ = ["FILTER_KINDS", "FILTER_SPEC_HELP", "Amplify", "Clamp", "Filter", "Identity", "Pass", "default_grid",
           "filters_from_specs", "format_filter", "heatmap", "make_filter", "parse_filter"]
