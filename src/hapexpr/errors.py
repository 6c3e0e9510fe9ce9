"""The project's own error type: one paragraph naming the file, the record and the fix."""

from __future__ import annotations

from pathlib import Path


class HapexprError(Exception):
    """An error the user can act on; the CLI prints it as one paragraph and exits non-zero.

    ``path`` is the file at fault, ``record`` the line or record in it (e.g. ``"line 12"`` or
    ``"chr1:1234 A>G"``), ``hint`` what to do about it.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        record: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.path = None if path is None else str(path)
        self.record = record
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = f"{self.path}"
            if self.record is not None:
                where += f", {self.record}"
            where += ": "
        elif self.record is not None:
            where = f"{self.record}: "
        text = where + self.message.rstrip(".") + "."
        if self.hint:
            text += " " + self.hint.rstrip(".") + "."
        return text


class InputError(HapexprError):
    """A user-supplied input file is malformed or inconsistent with another."""


class StudyError(HapexprError):
    """A study directory is missing, incomplete, locked or of another format version."""


class PluginError(HapexprError):
    """A plugin (a method or an embedder) that cannot be registered: not the right kind of class,
    a name another one already holds, or an entry point that does not say what it provides."""
