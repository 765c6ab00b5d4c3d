"""The weights-name rule, ``ARCH-xS.TAG`` (``espcn-x3.general100``): one pattern for naming new
weights and for reading the architecture and scale back out of a recorded name."""

from __future__ import annotations

import re

_ARCH_SCALE = r"^(?P<arch>[a-z0-9-]+)-x(?P<scale>\d+)\."
NAME_PATTERN = re.compile(_ARCH_SCALE + r"(?P<tag>[A-Za-z0-9_.-]+)$")
_PREFIX = re.compile(_ARCH_SCALE)


def arch_and_scale(name: str) -> tuple[str, int] | None:
    """``(ARCH, S)`` of a name that starts ``ARCH-xS.`` (any tag, ``NAME+`` included), else None."""
    match = _PREFIX.match(name)
    return (match["arch"], int(match["scale"])) if match else None
