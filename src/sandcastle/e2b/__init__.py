"""E2B's API, spoken by this server: its control plane, its in-sandbox daemon (envd) and its
code interpreter, each mapped onto our services (``docs/E2B.md``)."""
