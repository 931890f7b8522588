"""Leap0's API, spoken by this server: its control plane (``/v1/sandbox…``, singular) and the
code-interpreter calls of its per-sandbox host, each mapped onto our services
(``docs/LEAP0.md``)."""
