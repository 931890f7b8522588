"""The runtime plane: how a sandbox runs (isolation backends, templates, the agent channel)."""
