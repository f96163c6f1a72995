"""Logging for one process (a step, the CLI, a subprocess check): set up once, in one format."""

import logging

FORMAT = "%(levelname)s %(name)s: %(message)s"
# Libraries whose INFO lines are their own bookkeeping (great-expectations logs a line for each
# function it registers: hundreds per validate step), not news about the data.
QUIET_LIBRARIES = ("great_expectations",)


def configure(level: int = logging.INFO) -> None:
    """INFO and above to stderr, in FORMAT (a process that has set up logging, as KFP's
    executor does, keeps its own handler); the quiet libraries at WARNING."""
    logging.basicConfig(level=level, format=FORMAT)
    for library in QUIET_LIBRARIES:
        logging.getLogger(library).setLevel(logging.WARNING)
