"""The in-sandbox agent: dials home, runs REPL contexts as Jupyter kernels.

Everything under ``sandcastle.agent`` runs inside the sandbox with the agent's own environment
(the standard library, ``jupyter_client`` and its dependencies). It must not import any other
``sandcastle`` package.
"""
