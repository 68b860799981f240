"""The base of the dock widgets: a scrolling panel (fits a 1600x1000 screen), a status line that wraps,
the worker lifecycle (start, progress bar, cancel, errors, done) and a figure canvas in napari's theme."""

from __future__ import annotations

import time

from magicgui.widgets import Container, Label
from qtpy.QtCore import QObject, Qt, QTimer, Signal
from qtpy.QtWidgets import QDockWidget, QMainWindow, QProgressBar, QScrollArea, QSizePolicy

from ._session import session_for

#: the widest a dock may ask to be (px); its contents scroll vertically inside
DOCK_WIDTH = 460


class _Bridge(QObject):
    progressed = Signal(int, int)


class DockPanel(QScrollArea):
    """A dock widget: ``panel`` (a magicgui Container) inside a vertical scroll area.

    Subclasses add controls with :meth:`add` (magicgui widgets) and :meth:`add_native` (Qt widgets) and
    run background work with :meth:`start`; ``status`` is the one status line."""

    _count = 0  # docks made so far: the first of a viewer's docks anchors their tab group

    def __init__(self, napari_viewer):
        super().__init__()
        self._viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.panel = Container(labels=True)
        self.panel.native.setMinimumWidth(DOCK_WIDTH - 30)
        self.setWidget(self.panel.native)
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setMinimumWidth(DOCK_WIDTH)
        self.setMaximumWidth(DOCK_WIDTH + 80)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)
        self.status = Label(value="", label="status")
        self.status.native.setWordWrap(True)
        self.status.native.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self._bridge = _Bridge()
        self._bridge.progressed.connect(self._on_progress)
        self._pbar = None
        self._making_pbar = False
        #: the dock's own progress bar: the step, the elapsed time and an estimate of the rest (hidden when idle)
        self.progress_bar = QProgressBar()
        self.progress_bar.setTextVisible(True)
        self.progress_bar.hide()
        self.progress_text = ""  # the bar's last text, kept after the work ends
        self._started_at = 0.0
        self._cancel = False
        self.worker = None
        self._busy_controls: list = []
        # once napari has put the panel in its dock: share one tabbed place with the other napari-lrp docks
        DockPanel._count += 1
        self.created = DockPanel._count
        self._tabified = False
        self._pending_steps = 0
        self._done_deferred = False
        QTimer.singleShot(0, self.tabify_with_siblings)

    def own_dock(self):
        """The dock widget napari put this panel in (None before it is docked).

        Returns
        -------
        QDockWidget or None
        """
        w = self.parentWidget()
        while w is not None and not isinstance(w, QDockWidget):
            w = w.parentWidget()
        return w

    def tabify_with_siblings(self) -> bool:
        """Put this dock in one tabbed group with napari-lrp's other docks in the same area (napari stacks
        docks one below the other, leaving each a sliver at 1600x1000) and bring it to the front.

        Returns
        -------
        bool
            Whether it joined another napari-lrp dock.
        """
        mine = self.own_dock()
        window = mine.parentWidget() if mine is not None else None
        if not isinstance(window, QMainWindow):
            return False
        area = window.dockWidgetArea(mine)
        older = [(panel.created, other) for other in window.findChildren(QDockWidget)
                 if other is not mine and not other.isFloating() and window.dockWidgetArea(other) == area
                 for panel in other.findChildren(QScrollArea)
                 if isinstance(panel, DockPanel) and panel.created < self.created]
        if not older or self._tabified:
            return self._tabified
        window.tabifyDockWidget(min(older, key=lambda item: item[0])[1], mine)  # the group's first dock
        self._tabified = True
        mine.show()
        mine.raise_()
        return True

    def minimumSizeHint(self):  # noqa: N802 - Qt's name; the contents scroll, so only the width is fixed
        hint = super().minimumSizeHint()
        hint.setHeight(min(hint.height(), 200))
        return hint

    # ---- building -----------------------------------------------------------------------------
    def add(self, *widgets) -> None:
        self.panel.extend(widgets)
        if self.status in widgets:  # the progress bar sits right under the status line
            self.place_native_after(self.progress_bar, self.status)

    def add_native(self, qwidget) -> None:
        """Add a Qt widget below the panel's contents.

        Parameters
        ----------
        qwidget : QWidget
            The widget.
        """
        self.panel.native.layout().addWidget(qwidget)

    def place_native_before(self, qwidget, widget) -> None:
        """Move a Qt widget added with :meth:`add_native` to just above the magicgui ``widget``."""
        self._place_native(qwidget, widget, 0)

    def place_native_after(self, qwidget, widget) -> None:
        """Put a Qt widget just below the magicgui ``widget``."""
        self._place_native(qwidget, widget, 1)

    def _place_native(self, qwidget, widget, offset: int) -> None:
        layout = self.panel.native.layout()
        layout.removeWidget(qwidget)
        for i in range(layout.count()):
            item = layout.itemAt(i).widget()
            if item is not None and (item is widget.native or item.isAncestorOf(widget.native)):
                layout.insertWidget(i + offset, qwidget)
                return
        layout.addWidget(qwidget)

    # ---- status and errors --------------------------------------------------------------------
    def set_status(self, text: str) -> None:
        self.status.value = text
        self.status.tooltip = text

    def show_error(self, exc) -> None:
        from napari.utils.notifications import show_error

        # the package's errors (CaseError, ModelError are ValueErrors) carry a sentence; anything else its type
        msg = str(exc) if isinstance(exc, (ValueError, TypeError, RuntimeError, OSError, KeyError)) else repr(exc)
        self.set_status(f"error: {msg}")
        show_error(f"napari-lrp: {msg}")

    # ---- background work ----------------------------------------------------------------------
    def progress_callback(self, cancelled_error):
        """A progress(done, total) for core functions: forwards to the progress bar, raises on cancel."""
        self._cancel = False

        def progress(done, total):
            if self._cancel:
                raise cancelled_error("cancelled by the user")
            self._bridge.progressed.emit(done, total)

        return progress

    def start(self, worker, on_return, busy: str = "working ...") -> None:
        """Run a napari worker: ``on_return`` gets its result on the main thread; errors go to the status."""
        self.worker = worker
        worker.returned.connect(on_return)
        worker.errored.connect(self._errored)
        worker.finished.connect(self._done)
        for w in self._busy_controls:
            w.enabled = False
        if hasattr(self, "cancel_button"):
            self.cancel_button.enabled = True
        self.set_status(busy)
        self._started_at = time.perf_counter()
        self.progress_bar.setRange(0, 0)  # busy until the first step is known
        self.progress_bar.setFormat(busy)
        self.progress_bar.show()
        worker.start()

    def later(self, step) -> None:
        """Run ``step`` on a later turn of the event loop (a long update split, so the window draws between its
        parts); the dock stays busy (``worker`` set) until it has run.

        Parameters
        ----------
        step : callable
            Called with no arguments on the main thread.
        """
        self._pending_steps += 1

        def run():
            try:
                step()
            finally:
                self._pending_steps -= 1
                if self._pending_steps == 0 and self._done_deferred:
                    self._done_deferred = False
                    self._done()

        QTimer.singleShot(0, run)

    def cancel(self) -> None:
        self._cancel = True
        if self.worker is not None:
            self.worker.quit()
            self.set_status("cancelling ...")

    def _on_progress(self, done: int, total: int) -> None:
        from napari.utils import progress

        if self.worker is None:  # a step queued before the work ended: nothing is running any more
            return
        if self._pbar is None:
            if self._making_pbar:  # napari's activity dialog processes events while it builds the entry
                return
            self._making_pbar = True
            try:
                pbar = progress(total=total, desc=type(self).__name__.replace("Widget", "").lower())
            finally:
                self._making_pbar = False
            if self.worker is None:  # the job ended while napari built the entry
                pbar.close()
                return
            self._pbar = pbar
        elif self._pbar.total != total:  # the next phase (another pass count): napari's entry follows it
            self._pbar.reset(total=total)
        self._pbar.update(done - self._pbar.n)
        self.progress_text = progress_words(done, total, time.perf_counter() - self._started_at)
        self.progress_bar.setRange(0, max(int(total), 1))
        self.progress_bar.setValue(min(int(done), max(int(total), 1)))
        self.progress_bar.setFormat(self.progress_text)

    def _errored(self, exc) -> None:
        from napari.utils.notifications import show_info

        if type(exc).__name__ == "Cancelled" or self._cancel:
            show_info("napari-lrp: cancelled; the layers are as before")
            self.set_status("cancelled")
            return
        self.show_error(exc)

    def _done(self) -> None:
        if self._pending_steps:  # the job's result is still being shown in steps: busy until they ran
            self._done_deferred = True
            return
        if self._pbar is not None:  # napari's activity entry ends with the work, also on an error or a cancel
            self._pbar.close()
            self._pbar = None
        self.progress_bar.hide()
        for w in self._busy_controls:
            w.enabled = True
        if hasattr(self, "cancel_button"):
            self.cancel_button.enabled = False
        if self._cancel and self.status.value in ("working ...", "cancelling ...", "loading ..."):
            self.set_status("cancelled")
        self.worker = None


def progress_words(done: int, total: int, elapsed: float) -> str:
    """A progress bar's text: the step, the elapsed time and the estimate of the rest.

    Parameters
    ----------
    done, total : int
        Steps done and in all (0 when unknown).
    elapsed : float
        Seconds since the work started.

    Returns
    -------
    str
        For example '12/49 · 3 s · about 9 s left'.
    """
    text = f"{done}/{total} · {elapsed:.0f} s" if total else f"{done} · {elapsed:.0f} s"
    if total and 0 < done < total:
        text += f" · about {elapsed / done * (total - done):.0f} s left"
    return text


class ThemedCanvas:
    """A matplotlib figure in a Qt canvas, drawn in the napari theme's colours (also when empty)."""

    def __init__(self, viewer, figsize=(5, 5), min_height: int = 320, placeholder: str = ""):
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self._viewer = viewer
        self.figure = Figure(figsize=figsize)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(min_height)
        self.placeholder = placeholder
        self.clear()

    def colours(self) -> tuple[str, str]:
        try:
            from napari.utils.theme import get_theme

            theme = get_theme(self._viewer.theme)
            return theme.canvas.as_hex(), theme.text.as_hex()
        except Exception:  # noqa: BLE001 - theming is cosmetic
            return "#262930", "#f0f1f2"

    def clear(self) -> None:
        """An empty chart area in the theme's colours with the placeholder text."""
        self.figure.clear()
        bg, fg = self.colours()
        self.figure.set_facecolor(bg)
        if self.placeholder:
            self.figure.text(0.5, 0.5, self.placeholder, ha="center", va="center", color=fg, wrap=True)
        self.canvas.draw_idle()

    def themed(self) -> None:
        """Apply the theme to every axis after a chart was drawn, then draw."""
        bg, fg = self.colours()
        self.figure.set_facecolor(bg)
        for ax in self.figure.axes:
            ax.set_facecolor(bg)
            ax.tick_params(colors=fg)
            ax.yaxis.label.set_color(fg)
            ax.xaxis.label.set_color(fg)
            ax.title.set_color(fg)
            for spine in ax.spines.values():
                spine.set_color(fg)
            legend = ax.get_legend()
            if legend is not None:
                legend.get_frame().set_facecolor(bg)
                for text in legend.get_texts():
                    text.set_color(fg)
        self.canvas.draw_idle()
