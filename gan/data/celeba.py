"""CelebA: selected binary attributes of ``list_attr_celeba.txt`` as multi-label domains, split like StarGAN."""

from __future__ import annotations

import difflib
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from gan.data.base import DataBundle, ImageFileDataset, unreadable
from gan.data.links import LinkRule, listed_refusal
from gan.data.transforms import image_transform
from gan.errors import DataError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AttrTable:
    """The rows of an attribute file, in file order, reduced to the selected attributes."""

    filenames: list[str]
    labels: torch.Tensor  # (N, D) float32, 1.0 where the file says 1, 0.0 where it says -1
    names: tuple[str, ...] = ()  # every attribute the file has (its header line)


def _attribute_columns(path: Path, names: list[str], wanted: list[str]) -> list[int]:
    """Column of each wanted attribute; an unknown one is an error that suggests a close match."""
    columns = []
    for attr in wanted:
        if attr not in names:
            close = difflib.get_close_matches(attr, names, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"available: {', '.join(names)}"
            raise DataError(f"{path}: attribute {attr!r} is not in the file ({hint})")
        columns.append(names.index(attr))
    return columns


def read_attributes(path: Path, wanted: list[str]) -> AttrTable:
    """Parse a CelebA attribute file: a count line, a line of names, then ``filename v1 .. vN`` with 1 / -1."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read attribute file ({getattr(exc, 'strerror', None) or exc})") from exc
    if len(lines) < 2 or not lines[0].strip().isdigit():
        raise DataError(f"{path}:1: expected the image count on line 1 and attribute names on line 2")
    names = lines[1].split()
    columns = _attribute_columns(path, names, wanted)
    filenames, rows = [], []
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue  # tolerate blank lines, e.g. a trailing one
        values = [fields[1 + c] for c in columns] if len(fields) == len(names) + 1 else None
        if values is None or any(v not in ("1", "-1") for v in values):
            raise DataError(
                f"{path}:{number}: expected a file name and {len(names)} values of 1 or -1, got {line.strip()[:80]!r}"
            )
        filenames.append(fields[0])
        rows.append([v == "1" for v in values])
    if not filenames:
        raise DataError(f"{path}: no images listed after the two header lines")
    if int(lines[0]) != len(filenames):
        logger.warning("%s: line 1 says %s images but %d are listed", path, lines[0].strip(), len(filenames))
    labels = torch.tensor(rows, dtype=torch.float32).view(len(filenames), len(columns))
    return AttrTable(filenames, labels, tuple(names))


def split_indices(n: int, test_count: int, seed: int) -> tuple[list[int], list[int]]:
    """StarGAN's split: shuffle the rows with ``random.Random(seed)`` and send the first ``test_count`` to test.

    ``random.seed(1234); random.shuffle(lines)`` in StarGAN gives the same order. StarGAN's ``(i+1) < 2000`` keeps
    1999 test images; here exactly ``test_count`` are kept.
    """
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order[test_count:], order[:test_count]


def _linked_out(
    image_dir: Path, filenames: list[str], rows: list[int], follow_links: str
) -> tuple[list[int], list[str]]:
    """``rows`` without the files whose links (or ``..``) lead out of the image folder, the one domain folder of an
    attribute file (with ``anywhere`` all are kept: there is no other domain folder to protect), and the reasons."""
    links = LinkRule(follow_links)
    if links.follow == "anywhere":
        return rows, []
    home = image_dir.resolve()
    kept, refused = [], []
    for row in rows:
        problem = listed_refusal(image_dir, home, filenames[row], links)
        if problem is None:
            kept.append(row)
        else:
            refused.append(problem)
    return kept, refused


def _usable_rows(
    image_dir: Path, filenames: list[str], rows: list[int], follow_links: str, skip_bad: bool, check: bool
) -> tuple[list[int], list[str]]:
    """``rows`` without refused links and, with ``skip_bad``, without the images that do not load; and why each was
    dropped. Without ``skip_bad`` a refused link is a DataError, and so is a bad image: found now with ``check``
    (every image decoded before any run begins), else when it is read."""
    kept, refused = _linked_out(image_dir, filenames, rows, follow_links)
    if refused and not skip_bad:
        raise DataError(refused[0])
    if not (check or skip_bad):
        return kept, []
    problems = {i: unreadable(image_dir / filenames[i]) for i in kept}
    bad = [problem for problem in problems.values() if problem is not None]
    if bad and not skip_bad:
        raise DataError(f"{bad[0]} ({len(bad)} bad file(s) in {image_dir}; data.skip_bad_images: true skips them)")
    return [i for i in kept if problems[i] is None], refused + bad


def build_celeba(
    image_dir: str,
    attr_file: str,
    attributes: list[str],
    test_count: int,
    split_seed: int,
    image_size: int,
    crop_size: int = 0,
    skip_bad_images: bool = False,
    train_flip: bool = True,
    exclusive_groups: list[list[str]] | tuple = (),
    follow_links: str = "inside",
    check_images: bool = True,
) -> DataBundle:
    """Lazily read CelebA datasets; the label is a float (D,) 0/1 vector over ``attributes``. ``exclusive_groups``
    name attributes of which an image has one at most (gan.labels); names the file lacks are reported.
    ``follow_links`` (gan.data.links): ``inside`` refuses files that lead out of ``image_dir``."""
    if not attributes:
        raise DataError("data.celeba.attributes is empty: name at least one attribute of the attribute file")
    attr_path, image_path = Path(attr_file), Path(image_dir)
    if not attr_file or not attr_path.is_file():
        raise DataError(f"{attr_file or 'data.celeba.attr_file'}: attribute file not found")
    if not image_dir or not image_path.is_dir():
        raise DataError(f"{image_dir or 'data.celeba.image_dir'}: image folder not found")
    table = read_attributes(attr_path, list(attributes))
    unknown = [name for group in exclusive_groups for name in group if name not in table.names]
    if unknown:  # a warning, not an error: the default group names all four hair colours, a custom file may lack some
        logger.warning(
            "%s: data.celeba.exclusive_groups names %s, which the attribute file does not have (ignored; a typo?)",
            attr_path,
            ", ".join(repr(name) for name in unknown),
        )
    train_rows, test_rows = split_indices(len(table.filenames), test_count, split_seed)
    if not train_rows:
        raise DataError(f"{attr_path}: lists {len(table.filenames)} images, all taken by test_count={test_count}")
    # After the split, so a bad file does not move other images between train and test.
    train_rows, bad_train = _usable_rows(
        image_path, table.filenames, train_rows, follow_links, skip_bad_images, check_images
    )
    test_rows, bad_test = _usable_rows(
        image_path, table.filenames, test_rows, follow_links, skip_bad_images, check_images
    )
    if not train_rows:
        raise DataError(f"{image_path}: none of the training images listed in {attr_path} could be read")
    transform = image_transform(image_size, crop_size)

    def dataset(rows: list[int], flip: bool) -> ImageFileDataset:
        paths = [image_path / table.filenames[i] for i in rows]
        labels = table.labels[torch.tensor(rows, dtype=torch.int64)]
        return ImageFileDataset(paths, labels, transform, flip=flip)

    train, test = dataset(train_rows, train_flip), dataset(test_rows, False)
    groups = tuple(tuple(group) for group in exclusive_groups)
    skipped = (*bad_train, *bad_test)
    return DataBundle(train, test, list(attributes), True, None, len(skipped), groups, notes=skipped)
