"""Where torch work runs: one spelling of a device for every config, resolved in one place.

A config names a device as "auto" (a GPU when present, else the CPU), "cpu", "cuda" or
"cuda:N"; None means "auto" (older selector configs default to None, and their stored
signals are keyed by it, so it is accepted as written rather than rewritten).
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

from gristmill.errors import InputError

_DEVICE_NAME = re.compile(r"auto|cpu|cuda(:\d+)?")
DEVICE_HELP = "auto (a GPU when present, else the CPU), cpu, cuda or cuda:N"


def _unknown_device(name: object) -> str:
    return f"device {name!r} is not one gristmill knows: use {DEVICE_HELP}"


def _known_device(name: str) -> str:
    """The name as given when it spells a device; ValueError (a config error) otherwise."""
    if not isinstance(name, str) or not _DEVICE_NAME.fullmatch(name):
        raise ValueError(_unknown_device(name))
    return name


# A config field naming a device; checked when the config is read, resolved when work starts.
Device = Annotated[str, AfterValidator(_known_device)]


def resolve_device(name: str | None = "auto") -> str:
    """The torch device to run on: "auto" or None -> "cuda" when a GPU is present, else "cpu";
    InputError for a name that is not a device, or a GPU asked for where there is none."""
    if name is not None:
        try:
            _known_device(name)
        except ValueError as error:
            raise InputError(str(error)) from None
    import torch  # here, so that reading a config needs no torch

    if name is None or name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return name
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(name.partition(":")[2] or 0)
    if index >= count:
        found = f"{count} CUDA GPU{'s' if count != 1 else ''}" if count else "no CUDA GPU"
        raise InputError(
            f"device {name!r} asked for, but this machine has {found} (use auto or cpu)"
        )
    return name
