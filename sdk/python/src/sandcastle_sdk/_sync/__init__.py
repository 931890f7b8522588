# Generated from ../_async/__init__.py by sdk/python/tools/generate_sync.py: do not edit.
