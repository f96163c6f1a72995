"""How a step that fails says so: its one-sentence reason on the console, the traceback kept.

On a cluster the pod's log is the full log, so the traceback goes there as Python prints it,
with the reason as the last line. ``imgclf run`` sets ``FAILURE_DIR_VARIABLE``: a step then
writes its traceback and reason there and prints only the reason and where the traceback is,
and the CLI ends with the failing step's reason. ``VERBOSE_VARIABLE`` prints tracebacks anyway.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

FAILURE_DIR_VARIABLE = "IMGCLF_FAILURE_DIR"
VERBOSE_VARIABLE = "IMGCLF_VERBOSE"


def report_uncaught(step: str) -> None:
    """From now on, an exception nobody catches in this process ends it as a failure of
    ``step``, reported as above (exit status 1, as Python's own)."""

    def report(kind, error, trace) -> None:
        reason = one_line(error)
        failure_dir = os.environ.get(FAILURE_DIR_VARIABLE)
        if not failure_dir or os.environ.get(VERBOSE_VARIABLE):
            traceback.print_exception(kind, error, trace)
        if failure_dir:
            log_file = Path(failure_dir) / f"{step}.log"
            log_file.parent.mkdir(parents=True, exist_ok=True)
            log_file.write_text("".join(traceback.format_exception(kind, error, trace)))
            record = {"step": step, "reason": reason, "traceback": str(log_file)}
            (Path(failure_dir) / f"{step}.json").write_text(json.dumps(record))
            print(f"{step} failed: {reason} (traceback: {log_file})", file=sys.stderr)
        else:
            print(f"{step} failed: {reason}", file=sys.stderr)

    sys.excepthook = report


def one_line(error: BaseException) -> str:
    """An error's message on one line, or its type where it has none."""
    text = " ".join(str(error).split())
    return text or type(error).__name__


def recorded(failure_dir: str | Path) -> list[dict]:
    """The failures steps recorded under ``failure_dir``, oldest first."""
    records = sorted(Path(failure_dir).glob("*.json"), key=lambda path: path.stat().st_mtime)
    return [json.loads(path.read_text()) for path in records]
