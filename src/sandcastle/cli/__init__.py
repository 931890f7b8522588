"""The ``sandcastle`` command line."""
