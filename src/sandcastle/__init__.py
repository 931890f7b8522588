"""Sandcastle: self-hosted isolated sandboxes with stateful REPL contexts.

This package must stay import-free: the in-sandbox agent imports ``sandcastle.agent`` with only
the agent's own environment available.
"""

__version__ = "0.1.0"
