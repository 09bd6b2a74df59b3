"""Expected problems with the user's data or options.

Every problem a user can cause (a missing file, a malformed CSV, a checkpoint of another
challenge) is raised as a :class:`MedchallengeError`. The CLI turns it into one line on stderr
naming the file and the problem, and exit code 2. Anything else is a bug (exit 1, traceback).
"""

from __future__ import annotations

from pathlib import Path


class MedchallengeError(Exception):
    """Base class of the expected errors; ``str(err)`` is the one line the user sees."""

    exit_code = 2
    prefix = "error"


class DataError(MedchallengeError):
    """A problem with an input file or folder: ``DataError(path, "what is wrong")``."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{_shown(self.path)}: {problem}" if self.path is not None else problem)


def _shown(path: Path) -> str:
    """The path as text; quoted (repr) when it holds a newline or other control character, so the
    error stays one line whatever a folder is called."""
    text = str(path)
    return repr(text) if any(ord(c) < 32 or ord(c) == 127 for c in text) else text


class OptionError(MedchallengeError):
    """A command-line option that cannot work (bad value, contradictory options)."""


class TrainingError(MedchallengeError):
    """Training cannot go on (a non-finite loss, an out-of-memory GPU with advice)."""


class Preempted(MedchallengeError):
    """Training stopped on a scheduler's signal after saving a resumable last.pt.

    Exit code 75 (EX_TEMPFAIL: try again), so a job script can requeue on it.
    """

    exit_code = 75
    prefix = "stopped"
