"""The demo: napari with the sample case, the sample model and the plugin's widgets (one run done)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..samples import sample_nnunet_path
from ._layers import guard_one_case, keep_one_case


def open_demo(viewer=None, run: bool = True, model: str | None = None):
    """Open the sample case and dock the widgets through napari's plugin path, as the Plugins menu does.

    Parameters
    ----------
    viewer : napari.Viewer, optional
        Default a new viewer.
    run : bool
        Start one run.
    model : str, optional
        A model path, or 'nnunet' for the sample nnU-Net results folder (default the sample card).

    Returns
    -------
    tuple
        (viewer, Relevance dock, Inclusivity dock).
    """
    import napari


    viewer = viewer or napari.Viewer(title="napari-lrp demo")

    guard_one_case(viewer)
    viewer.open_sample("napari-lrp", "stroke_case_1")
    keep_one_case(viewer)  # outlines and orientation now, not only after the next event-loop turn
    _dock, rel = viewer.window.add_plugin_dock_widget("napari-lrp", "Relevance")
    _dock, inc = viewer.window.add_plugin_dock_widget("napari-lrp", "Inclusivity and sweeps")
    if model is not None:
        rel.model_path.value = str(sample_nnunet_path() if model == "nnunet" else model)
    if run:
        rel.run()
    return viewer, rel, inc


def wait_for(widget, timeout: float = 300.0) -> None:
    """Process Qt events until the widget's worker has finished.

    Parameters
    ----------
    widget : DockPanel
        A dock with a running worker.
    timeout : float
        Seconds before TimeoutError.
    """
    from qtpy.QtWidgets import QApplication

    t0 = time.time()
    while widget.worker is not None:
        QApplication.processEvents()
        time.sleep(0.02)
        if time.time() - t0 > timeout:
            raise TimeoutError("the relevance run did not finish in time")
    for _ in range(20):
        QApplication.processEvents()


def focus_on_lesion(viewer, exp) -> None:
    """Put the axial slider on the slice with the most target region (or the most relevance).

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer.
    exp : Explanation
        The run shown.
    """
    lab = exp.case.label if exp.case.label is not None else exp.prediction
    z = int(np.argmax(lab.reshape(lab.shape[0], -1).sum(1))) if lab.any() else int(
        np.argmax(np.abs(exp.relevance).sum(axis=(0, 2, 3))))
    world_z = exp.case.grid.translate[0] + z * exp.case.grid.spacing[0]
    viewer.dims.set_point(0, world_z)
    viewer.reset_view()


def headless_demo(out: str | Path, size=(1500, 950), model: str | None = None) -> list[Path]:
    """Run the demo on a (virtual) display: relevance NIfTIs, settings JSON and screenshots in ``out``.

    Parameters
    ----------
    out : str or Path
        The output folder.
    size : tuple of int
        The window's size in pixels.
    model : str, optional
        As for :func:`open_demo`.

    Returns
    -------
    list of Path
        The files written and the two screenshots (window, canvas).
    """
    import napari
    from qtpy.QtWidgets import QApplication

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(title="napari-lrp demo", show=True)
    viewer.window._qt_window.resize(*size)
    _viewer, rel, inc = open_demo(viewer, model=model)
    wait_for(rel)
    exp = rel.session.explanation
    if exp is None:
        raise RuntimeError(f"the demo run failed: {rel.status.value}")
    for name in ("MTT", "rCBF", "rCBV", "Tmax", "TTP"):
        viewer.layers[name].visible = False
    viewer.layers["ADC"].visible = True
    focus_on_lesion(viewer, exp)
    inc.run_sweep()
    t0 = time.time()
    while inc.sweep_table is None and time.time() - t0 < 300:
        QApplication.processEvents()
        time.sleep(0.05)
    for _ in range(30):
        QApplication.processEvents()
    written = inc.save(str(out))
    window_png = out / "screenshot.png"
    viewer.screenshot(str(window_png), canvas_only=False)
    canvas_png = out / "canvas.png"
    viewer.screenshot(str(canvas_png), canvas_only=True)
    viewer.close()
    return [*written, window_png, canvas_png]
