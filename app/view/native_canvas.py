"""A VisPy SceneCanvas that draws into a native child window instead of a QOpenGLWidget.

VisPy's Qt backend is a ``QOpenGLWidget``: it renders into a framebuffer object, and Qt then
composes that texture *and the rest of the top-level window* with OpenGL on every frame — and
on every repaint of any other widget in the window, since one OpenGL widget switches the whole
window to OpenGL composition. On software OpenGL (Mesa llvmpipe, the build machines) that is a
textured draw of all 1600×1000 pixels per frame: measured 12 CPU ms per frame for an empty
900×553 view in such a window, 5.5 ms drawn into a native window (docs/BENCHMARKS.md, "Lattice
view frame rate"). Here the canvas owns a ``QWindow`` with its own OpenGL context, embedded with
``QWidget.createWindowContainer``: a frame is drawn into the window's own back buffer and
swapped, and the other widgets go back to Qt's raster backing store.

What stays as it was: VisPy's Qt event translation (``QtBaseCanvasBackend``). Mouse, wheel and
key events reach the canvas whether they come from the native window (a real pointer) or are
sent to the widget (tests, ``canvas.native``). ``QWidget.grab()`` of the main window still
shows the view: a native window is not part of Qt's widget rendering, so the host widget paints
the canvas's offscreen render when Qt paints it, which it does only when the widget is shown,
resized or grabbed (the native window covers it otherwise).
"""

from __future__ import annotations

import numpy as np
import vispy
from PyQt6.QtCore import QCoreApplication, QEvent, QRect, Qt
from PyQt6.QtGui import QImage, QOpenGLContext, QPainter, QSurface, QWindow
from PyQt6.QtWidgets import QVBoxLayout, QWidget

vispy.use("pyqt6")     # VisPy's Qt backend module exists only once a Qt library is chosen

from vispy import scene  # noqa: E402
from vispy.app.backends._qt import QtBaseCanvasBackend, _set_config  # noqa: E402


class _GLWindow(QWindow):
    """The native window: hands frames, size changes and input to the backend."""

    def __init__(self, backend: "NativeCanvasBackend") -> None:
        super().__init__()
        self.setSurfaceType(QSurface.SurfaceType.OpenGLSurface)
        self._backend = backend

    def event(self, ev: QEvent) -> bool:
        if ev.type() == QEvent.Type.UpdateRequest:
            self._backend.draw_frame()
            return True
        return super().event(ev)

    def exposeEvent(self, ev) -> None:  # noqa: N802 (Qt API)
        if self.isExposed():
            self._backend.draw_frame()

    def mousePressEvent(self, ev) -> None:  # noqa: N802
        self._backend.mousePressEvent(ev)

    def mouseReleaseEvent(self, ev) -> None:  # noqa: N802
        self._backend.mouseReleaseEvent(ev)

    def mouseDoubleClickEvent(self, ev) -> None:  # noqa: N802
        self._backend.mouseDoubleClickEvent(ev)

    def mouseMoveEvent(self, ev) -> None:  # noqa: N802
        self._backend.mouseMoveEvent(ev)

    def wheelEvent(self, ev) -> None:  # noqa: N802
        self._backend.wheelEvent(ev)

    def keyPressEvent(self, ev) -> None:  # noqa: N802
        self._backend.keyPressEvent(ev)

    def keyReleaseEvent(self, ev) -> None:  # noqa: N802
        self._backend.keyReleaseEvent(ev)


class NativeCanvasBackend(QtBaseCanvasBackend, QWidget):
    """VisPy canvas backend: a QWidget hosting the native GL window (see the module docstring)."""

    def _init_specific(self, p, kwargs) -> None:
        QWidget.__init__(self, p.parent)
        fmt = _set_config(p.context.config)
        fmt.setAlphaBufferSize(0)         # an on-screen window: an alpha channel would make it see-through
        fmt.setSwapInterval(1 if p.vsync else 0)
        p.context.shared.add_ref("qt-native-window", self)
        self._window = _GLWindow(self)
        self._window.setFormat(fmt)
        self._window.create()
        self._gl = QOpenGLContext()
        self._gl.setFormat(fmt)
        if not self._gl.create():
            raise RuntimeError("could not create an OpenGL context")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QWidget.createWindowContainer(self._window, self))
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self._physical_size = (1, 1)
        self._gl_initialized = False
        self._update_posted = False
        self._initialized = True

    @property
    def gl_window(self) -> QWindow:
        """The native window the canvas draws into (it receives the pointer's real events)."""
        return self._window

    # ------------------------------------------------------------------ VisPy backend API
    def _vispy_set_current(self) -> None:
        if self._vispy_canvas is not None:
            self._gl.makeCurrent(self._window)

    def _vispy_swap_buffers(self) -> None:
        if self._vispy_canvas is not None:
            self._gl.swapBuffers(self._window)

    def _vispy_update(self) -> None:
        """Ask for a frame: one UpdateRequest posted at low priority (input is handled first, and
        requests until it is delivered coalesce), as QWidget.update does. Not
        QWindow.requestUpdate: without vsync (X11) Qt delivers that after a 5 ms timer, which
        cost a third of the frame rate at 1,000 flows (45 → 71 fps measured)."""
        if self._vispy_canvas is not None and not self._update_posted:
            self._update_posted = True
            QCoreApplication.postEvent(self._window, QEvent(QEvent.Type.UpdateRequest),
                                       Qt.EventPriority.LowEventPriority.value)

    def _vispy_close(self) -> None:
        self._gl.doneCurrent()
        self.close()
        self._window.destroy()

    # ------------------------------------------------------------------ size and frames
    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        """The canvas takes the widget's size at once, as QOpenGLWidget does (the native window
        follows through the window system a little later: the scene's layout must not wait)."""
        if self._vispy_canvas is None:
            return
        ratio = self.devicePixelRatioF()
        w, h = self.width(), self.height()
        self._vispy_set_physical_size(int(w * ratio), int(h * ratio))
        self._vispy_canvas.events.resize(size=(w, h), physical_size=self._physical_size)

    def screen_changed(self, _screen) -> None:
        """Moved to a screen with another pixel ratio: the physical size changes."""
        self.resizeEvent(None)
        self._vispy_update()

    def draw_frame(self) -> None:
        """Draw and swap (VisPy's draw event ends with both), if the window is on screen."""
        self._update_posted = False
        if self._vispy_canvas is None or not self._window.isExposed():
            return
        self._vispy_canvas.set_current()
        if not self._gl_initialized:
            self._gl_initialized = True
            self._vispy_canvas.events.initialize()
        self._vispy_canvas.events.draw(region=None)

    # ------------------------------------------------------------------ Qt widget rendering
    def paintEvent(self, event) -> None:  # noqa: N802 (Qt API)
        """What ``QWidget.grab()`` and ``render()`` see: the canvas rendered offscreen, opaque (the
        render's alpha is what blending left in the framebuffer, not transparency: the window
        shows the colours alone)."""
        if self._vispy_canvas is None or self.width() <= 0 or self.height() <= 0:
            return
        rgba = np.ascontiguousarray(render_offscreen(self._vispy_canvas))
        image = QImage(rgba.data, rgba.shape[1], rgba.shape[0], 4 * rgba.shape[1], QImage.Format.Format_RGBX8888)
        painter = QPainter(self)
        painter.drawImage(QRect(0, 0, self.width(), self.height()), image)
        painter.end()


def render_offscreen(canvas: scene.SceneCanvas, region: tuple[int, int, int, int] | None = None,
                     size: tuple[int, int] | None = None) -> np.ndarray:
    """``canvas.render(region, size)`` ([h, w, 4] uint8 RGBA), leaving the on-screen mapping intact.

    VisPy 0.17 remembers the last canvas→framebuffer mapping it applied, but without an FBO it
    resets that transform to identity behind the memory's back: a second render of the same
    region then skipped the offset (every export after the first came out shifted down by the
    difference in heights). Applying the identity mapping afterwards keeps both in step.
    """
    try:
        return canvas.render(region=region, size=size, alpha=True)
    finally:
        physical = tuple(canvas.physical_size)
        canvas.transforms.configure(fbo_size=physical, fbo_rect=(0, 0, *physical))


def native_scene_canvas(**kwargs) -> scene.SceneCanvas:
    """A ``SceneCanvas(**kwargs)`` whose ``native`` is a :class:`NativeCanvasBackend`."""
    canvas = scene.SceneCanvas(create_native=False, **kwargs)
    # What Canvas.create_native does, with this backend in place of the application's.
    NativeCanvasBackend(canvas, **canvas._backend_kwargs)
    canvas._backend_kwargs = None
    canvas.events.draw.connect(canvas.context.flush_commands, position="last")
    canvas.events.draw.connect((canvas, "swap_buffers"), ref=True, position="last")
    canvas.set_current()
    return canvas
