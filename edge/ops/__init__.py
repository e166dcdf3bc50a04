"""The operator's side: people counted, alerts, MQTT, Prometheus metrics, the live page, clips.

The loop (``edge.app.pipeline``) hands each frame's tracks to ``hub.OpsHub``, which turns
tracks into people (``people``), fires the alert rules (``alerts``), publishes to an MQTT
broker (``mqtt``, off unless ``events.mqtt`` is set) and keeps what the one HTTP server
(``web``) shows: ``/metrics`` (``metrics``), the page (``page.html``) and the live view.
``clips`` records a short video around each non-compliant person (off by default).

Nothing here blocks the camera loop on the network: MQTT goes through a bounded buffer
and its own thread, and HTTP clients are served from the server's threads.
"""
