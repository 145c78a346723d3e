"""The exceptions ringside raises on purpose.

Every error an operator can cause (a bad setting, an unreadable file, an unusable node id) is a
`ConfigError` whose text is one plain line naming what is wrong and where it came from. The CLI
prints that line and exits 2; it never shows a traceback for these.
"""


class RingsideError(Exception):
    """Root of every exception ringside raises deliberately."""


class ConfigError(RingsideError):
    """A setting or an input file is unusable; the message is one line that names it."""
