"""The web front end: a Gradio app and an HTTP API in one local server (``repaint serve``).

It is a thin layer over :func:`repaint.api.inpaint`: uploads become arrays, the library fills the hole, and the
results are shown or returned. What it adds is what a server needs: a model menu chosen by name (never by a path a
client types), upload limits, and one run at a time per device with a bounded queue.

``limits``   upload limits, decoding of uploads, the run gate (one run at a time, bounded queue)
``models``   the model menu: the bundled model, presets found on disk, files named at start; loaded lazily
``runner``   one run: form values -> settings -> ``repaint.api.inpaint``, progress, cancellation, x0 frames
``routes``   the HTTP API (FastAPI): image + mask in, PNG(s) out
``app``      the Gradio page; ``server`` assembles both into one ASGI app
"""
