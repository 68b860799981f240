"""What the canvas says about the layers (main thread only): the legend in the canvas's corner (orientation,
outline colours, what the colour bar measures and in which unit) and one colour bar, the top visible
relevance-like layer's. In 3D the legend describes the 3D rendering, as the outlines are not drawn there."""

from __future__ import annotations

from ..layerdata import ROLE
from ._session import session_for

#: the layer roles drawn with a colour map whose values mean something (they get the colour bar)
COLOUR_BAR_ROLES = ("relevance", "comparison", "concept", "uncertainty", "inspector")
#: the 3D view's camera: oblique, from above and in front, so depth and the lesion's extent both show
OBLIQUE_ANGLES = (0, -60, 90)
OUTLINES_2D = "outlines: yellow = prediction, cyan = ground truth (on top where they coincide)"
COLOURS_2D = "relevance: red = for the class, blue = against, transparent = none"
RENDERING_3D = "3D: |R| as a maximum-intensity projection (outlines are drawn in 2D only)"


def quantity_of(layer) -> str:
    """The colour bar's title for a layer: the quantity and its unit (``metadata['quantity']``, else the name).

    Parameters
    ----------
    layer : napari.layers.Layer
        A layer.

    Returns
    -------
    str
        For example 'R sum [logit]'.
    """
    return layer.metadata.get("quantity") or layer.name


def top_colour_layer(viewer):
    """The topmost visible layer with a meaningful colour map (relevance, comparison, concept, uncertainty).

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer.

    Returns
    -------
    napari.layers.Image or None
    """
    for layer in reversed(list(viewer.layers)):
        if layer.visible and layer.metadata.get(ROLE) in COLOUR_BAR_ROLES and hasattr(layer, "colorbar"):
            return layer
    return None


def legend_text(viewer, top=None) -> str:
    """The legend for the current view.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer.
    top : napari.layers.Image, optional
        The layer whose colour bar is shown.

    Returns
    -------
    str
        Orientation, outlines and colours in 2D, the rendering in 3D; then the colour bar's quantity and unit.
    """
    if viewer.dims.ndisplay == 3:
        lines = [RENDERING_3D]
    else:
        radiological = session_for(viewer).layers.radiological
        side = "R | L  (radiological: patient's right on the left)" if radiological else \
            "L | R  (neurological: patient's right on the right)"
        lines = [f"A (up)   {side}", OUTLINES_2D, COLOURS_2D]
    if top is not None:
        lines.append(f"colour bar: {quantity_of(top)}")
    return "\n".join(lines)


def show_colour_bar(viewer) -> None:
    """One colour bar, the top visible relevance-like layer's, and the legend that names its quantity.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer.
    """
    top = top_colour_layer(viewer)
    for layer in viewer.layers:
        if layer.metadata.get(ROLE) in COLOUR_BAR_ROLES and hasattr(layer, "colorbar"):
            want = layer is top
            if layer.colorbar.visible != want:
                layer.colorbar.visible = want
    text = viewer.canvas.overlays["text"]
    new = legend_text(viewer, top)
    if text.text != new:
        text.text = new
    text.position = "top_left"
    text.font_size = 9
    text.visible = True


def apply_orientation(viewer, radiological: bool | None = None) -> None:
    """Anterior up; radiological (patient's right on the screen's left, as ITK-SNAP and 3D Slicer) or
    neurological; the convention is written on the canvas.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer.
    radiological : bool, optional
        The convention (default: the viewer's current one).
    """
    state = session_for(viewer).layers
    if radiological is not None:
        state.radiological = radiological
    viewer.camera.orientation2d = ("up", "left" if state.radiological else "right")
    show_colour_bar(viewer)


def watch_colour_bars(viewer) -> None:
    """Keep the colour bar on the top visible relevance-like layer as layers are added, removed, moved, shown
    or hidden, and the legend in step with 2D and 3D.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer (watched once).
    """
    def refresh(*_):
        show_colour_bar(viewer)

    def inserted(event):
        if event.value.metadata.get(ROLE) in COLOUR_BAR_ROLES:
            event.value.events.visible.connect(refresh)
        refresh()

    viewer.layers.events.inserted.connect(inserted)
    viewer.layers.events.removed.connect(refresh)
    viewer.layers.events.moved.connect(refresh)
    viewer.dims.events.ndisplay.connect(refresh)
    for layer in viewer.layers:
        if layer.metadata.get(ROLE) in COLOUR_BAR_ROLES:
            layer.events.visible.connect(refresh)
