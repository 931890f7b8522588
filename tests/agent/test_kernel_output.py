"""A kernel's own stderr: drained without bound on the writer, only its tail kept."""

from __future__ import annotations

import subprocess
import sys
import time

from sandcastle.agent.kernel_output import OutputTail


def test_a_chatty_writer_never_blocks_and_only_the_tail_is_kept() -> None:
    tail = OutputTail(limit=1000)
    # 8 MiB, far past a pipe's buffer: the writer would block if nobody drained it.
    code = "import sys\nfor i in range(8192): sys.stderr.write('x' * 1023 + '\\n')\nprint('last words', file=sys.stderr)"
    done = subprocess.run(
        [sys.executable, "-c", code], stderr=tail.write_fd, stdout=subprocess.DEVNULL, timeout=60
    )
    assert done.returncode == 0
    deadline = time.monotonic() + 5
    while not tail.text().endswith("last words") and time.monotonic() < deadline:
        time.sleep(0.01)
    text = tail.text()
    assert text.endswith("last words")
    assert len(text) <= 1000
    tail.close()


def test_close_lets_the_drain_end() -> None:
    tail = OutputTail()
    tail.close()
    tail._thread.join(timeout=5)
    assert not tail._thread.is_alive()
    assert tail.text() == ""
