# The built-in template, built by `sandcastle template build python` (and `make serve`) through
# the same path as yours: Debian 12 from the host's configured mirror with our platform layer on
# top (the agent; the Python kernel with numpy, pandas and matplotlib in /opt/venv; Deno's
# kernel; the sandbox user), and nothing more. Start your own from it: `FROM python`
# (docs/TEMPLATES.md).
FROM debian:bookworm
