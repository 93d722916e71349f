"""Which result patterns (a template's ``outputs:``) a job file's relative path matches.

A pattern is a shell glob matched case-sensitively against the path relative to the job
directory (``fnmatch.fnmatchcase``: ``*`` matches across ``/`` too, so ``results/*``
takes the whole tree below ``results``). Besides: a pattern without ``/`` also matches
the file's own name at any depth (``*.vtk`` matches ``case/0/U.vtk``), and a leading
``**/`` also matches at the top (``**/*.log`` matches ``run.log``).
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase


def matches(pattern: str, path: str) -> bool:
    if fnmatchcase(path, pattern):
        return True
    if "/" not in pattern and fnmatchcase(path.rpartition("/")[2], pattern):
        return True
    return pattern.startswith("**/") and matches(pattern[3:], path)


def matching(patterns: Iterable[str], path: str) -> list[str]:
    """The patterns of ``patterns`` that ``path`` matches, in their order."""
    return [p for p in patterns if matches(p, path)]
