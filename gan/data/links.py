"""Where symbolic links in a dataset may lead (``data.follow_links``), and the recursive listing that obeys it.

Many datasets are folders of links into a shared image store, so links out of a domain folder can be allowed
(``anywhere``); by default (``inside``) they are refused, since a link that leaves its folder is more often a mistake
(``a/loop -> ..``) than a plan. In both modes a link never leads into another domain folder of the same dataset (its
images would get this folder's label, or test images would join training) and a folder is listed once, so a cycle
ends where it starts.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from gan.errors import ConfigError

logger = logging.getLogger(__name__)

FOLLOW_LINKS = ("inside", "anywhere")  # the values of data.follow_links
HINT = "set data.follow_links: anywhere to allow links out of the domain folder"


@dataclass(frozen=True)
class LinkRule:
    """Where a link under a domain folder may lead: ``follow`` is ``inside`` (only into that folder) or
    ``anywhere``; in both modes never into another of ``domains`` (every domain folder of the dataset, resolved)."""

    follow: str = "inside"
    domains: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        if self.follow not in FOLLOW_LINKS:
            raise ConfigError(
                f"data.follow_links: unknown value {self.follow!r}; choose one of: {', '.join(FOLLOW_LINKS)}"
            )

    def refusal(self, path: Path, real: Path, home: Path, link: bool) -> str | None:
        """Why ``path`` (``real`` once resolved; ``link``: ``path`` is itself a link, else a link or ``..`` on
        the way leads there) is not read as part of the domain folder ``home`` (resolved); None when it is."""
        target = f"a link to {real}" if link else f"leads to {real}"
        for other in self.domains:
            # Domain folders never nest (gan.data.folder checks it), so one that holds ``home`` is ``home`` itself.
            if real.is_relative_to(other) and not home.is_relative_to(other):
                return (
                    f"{path}: {target}, inside {other}, another domain folder of this dataset (its images would get"
                    " a second label, or test images would join training); such links are never followed"
                )
        if self.follow == "inside" and not real.is_relative_to(home):
            return f"{path}: {target}, outside the domain folder {home}; {HINT}"
        return None


def resolved(path: Path) -> Path | None:
    """``path`` with every link resolved, or None for a broken link or a link cycle."""
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
        return None
    return real


def walk(folder: Path, rule: LinkRule, suffixes: Collection[str]) -> tuple[list[Path], list[str]]:
    """The regular files under ``folder`` and its non-hidden sub-folders whose suffix (lower-cased) is in
    ``suffixes``, and a one-line reason for each link that ``rule`` refuses or that is broken. A folder reached a
    second time (a cycle, a second link to it) is skipped with a warning: its files are listed already."""
    home = folder.resolve()
    files: list[Path] = []
    refused: list[str] = []
    seen = {_identity(folder)}
    stack = [(folder, home, False)]
    while stack:
        parent, real_parent, via_link = stack.pop()
        with os.scandir(parent) as listing:
            # Real folders before links (then by name): a folder that is also linked is listed under its own path.
            entries = sorted(listing, key=lambda e: (e.is_symlink(), e.name))
        for entry in entries:
            path, link = Path(parent, entry.name), entry.is_symlink()
            folder_entry = entry.is_dir()
            if folder_entry and entry.name.startswith("."):
                continue
            if not folder_entry and path.suffix.lower() not in suffixes:
                continue
            real = resolved(path) if link else real_parent / entry.name
            if real is None:
                refused.append(f"{path}: a broken link (its target does not exist, or the link is a cycle)")
                continue
            problem = rule.refusal(path, real, home, link) if link or via_link else None
            if problem:
                refused.append(problem)
            elif folder_entry and _first_visit(path, seen):
                stack.append((path, real, via_link or link))
            elif not folder_entry and entry.is_file():  # regular files only: a FIFO named x.png would block
                files.append(path)
    return files, refused


def _identity(path: Path) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino


def _first_visit(path: Path, seen: set[tuple[int, int]]) -> bool:
    """Whether the folder ``path`` is entered: not one listed already through another path."""
    identity = _identity(path)
    if identity in seen:
        logger.warning("not following %s: a folder already listed (a link cycle or a second link to it)", path)
        return False
    seen.add(identity)
    return True


def listed_refusal(folder: Path, home: Path, name: str, rule: LinkRule) -> str | None:
    """Why the file ``name`` listed for ``folder`` (``home`` resolved) is refused by ``rule``, as :func:`walk`
    would refuse it; None when it may be read. A plain name that is not a link costs one ``lstat``; a missing file
    or a broken link is left to the reading, which names it (or ``data.skip_bad_images`` skips it)."""
    path = folder / name
    if len(Path(name).parts) == 1 and name not in (".", "..") and not path.is_symlink():
        return None
    real = resolved(path)
    return None if real is None else rule.refusal(path, real, home, path.is_symlink())
