"""The parity run's progress: a log (not a terminal) gets a line per tenth of the work, not one per unit."""

import io

from lars.parity.progress import Progress


def test_a_log_gets_a_line_per_tenth_and_the_last_unit():
    stream = io.StringIO()
    bar = Progress(250, stream=stream)
    for k in range(250):
        bar.advance(f"case {k}")
    bar.close()
    lines = stream.getvalue().splitlines()
    assert 10 <= len(lines) <= 11
    assert lines[-1].startswith("250/250") and lines[-1].endswith("case 249")
    assert "\r" not in stream.getvalue() and "\x1b[" not in stream.getvalue()  # no redraws in a log
