"""The screenshots in README.md, taken on the path users take: File > Open Sample > Stroke case 1, the
Relevance and Inclusivity docks from the Plugins menu (``add_plugin_dock_widget``; they share one tab group),
Run, a sweep, the 3D view.

    .venv/bin/python docs/make_screenshots.py        (starts Xvfb when there is no display)

Writes docs/screenshot.png (2D with colour bar and legend), docs/screenshot_sweep.png (the charts) and
docs/screenshot_3d.png into this folder.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIZE = (1600, 1000)


def _settle(app, seconds: float = 0.3) -> None:
    t0 = time.time()
    while time.time() - t0 < seconds:
        app.processEvents()
        time.sleep(0.01)


def _dock_of(widget):
    from qtpy.QtWidgets import QDockWidget

    w = widget
    while w is not None and not isinstance(w, QDockWidget):
        w = w.parentWidget()
    return w


def _front(widget) -> None:
    """Bring a dock's tab to the front."""
    dock = _dock_of(widget)
    dock.show()
    dock.raise_()


def main() -> int:
    display = None
    if not os.environ.get("DISPLAY"):
        from pyvirtualdisplay import Display

        display = Display(visible=False, size=SIZE, color_depth=24)
        display.start()
    try:
        import napari
        from qtpy.QtWidgets import QApplication

        from napari_lrp.widgets.demo import focus_on_lesion, open_demo, wait_for

        viewer = napari.Viewer(title="napari-lrp", show=True)
        viewer.window._qt_window.resize(*SIZE)
        app = QApplication.instance()
        _viewer, rel, inc = open_demo(viewer, run=False)
        rel.device.value = "cpu"
        rel.run()
        wait_for(rel)
        exp = rel.session.explanation
        if exp is None:
            print(f"the run failed: {rel.status.value}", file=sys.stderr)
            return 1
        for ly in viewer.layers:
            if ly.metadata.get("napari_lrp_role") == "image":
                ly.visible = ly.name == "ADC"
        focus_on_lesion(viewer, exp)
        _front(rel)
        _settle(app)
        viewer.screenshot(str(HERE / "screenshot.png"), canvas_only=False)
        inc.run_sweep()
        wait_for(inc)
        _front(inc)
        _settle(app)
        inc.ensureWidgetVisible(inc.canvas)
        _settle(app)
        viewer.screenshot(str(HERE / "screenshot_sweep.png"), canvas_only=False)
        _front(rel)
        rel._toggle_3d()
        _settle(app, 1.0)
        viewer.screenshot(str(HERE / "screenshot_3d.png"), canvas_only=False)
        viewer.close()
        for name in ("screenshot.png", "screenshot_sweep.png", "screenshot_3d.png"):
            print(HERE / name)
        return 0
    finally:
        if display is not None:
            display.stop()


if __name__ == "__main__":
    raise SystemExit(main())
