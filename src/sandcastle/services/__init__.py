"""Use cases of the control plane: they talk to the store and the runtime, never to HTTP."""
