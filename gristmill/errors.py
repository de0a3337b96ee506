"""Exceptions with the CLI exit code each one maps to."""

from __future__ import annotations


class GristmillError(Exception):
    """A failure gristmill reports to the user; exit code 1."""

    exit_code = 1


class InputError(GristmillError):
    """Bad usage or bad input (unknown format, unreadable path, invalid recipe); exit code 2."""

    exit_code = 2


class NotFoundError(InputError):
    """A named corpus, selection or signal does not exist in the workspace; exit code 2."""


class WorkspaceBusyError(GristmillError):
    """Another process holds the workspace; exit code 1."""
