"""Template root filesystems: recipes (what goes in), sources (where Debian comes from) and the
builder (debootstrap + recipe steps under bubblewrap, swapped into place atomically)."""
