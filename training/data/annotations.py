"""Text-polygon annotations: the seed JSON format and ICDAR 2015 ground truth.

Seed format, one JSON file per split (fields other than ``points`` are ignored)::

    {"images": {"a.jpg": {"words": {"0001": {"points": [[x, y], ...]}, ...}}, ...}}

ICDAR 2015, one ``gt_<image stem>.txt`` per image, one word per line (UTF-8, usually
with a byte-order mark)::

    x1,y1,x2,y2,x3,y3,x4,y4,transcription     (transcription "###" = don't care)

Every polygon is validated by pydantic: 4 or more points, each a pair of finite
numbers (not strings, not booleans) within +-``MAX_COORD``. An invalid file raises
``ValueError`` naming the file and the bad entry inside it, for example
``jsons/train.json: images."a.jpg".words."0003".points[1][0]: Input should be a
finite number``. In lenient mode (``strict=False``, used with
``data.on_bad_sample=skip``) a bad image entry is left out and reported instead.

Degenerate polygons (fewer than 3 distinct points, or zero area) are dropped and
counted in :attr:`Annotations.dropped`; the count is logged once per file set.
Coordinates are pixels, origin top left, continuous (a pixel spans one unit).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import shapely
from pydantic import (
    AllowInfNan,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    TypeAdapter,
    ValidationError,
)

log = logging.getLogger(__name__)

MAX_COORD = 1e6
"""Largest coordinate magnitude accepted: no real image is a million pixels wide."""

_Coord = Annotated[float, Strict(), AllowInfNan(False), Field(ge=-MAX_COORD, le=MAX_COORD)]
_BOM = "\ufeff"


class Word(BaseModel):
    """One annotated word: its polygon (4 or more ``[x, y]`` pairs)."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    points: Annotated[list[tuple[_Coord, _Coord]], Field(min_length=4)]


class ImageEntry(BaseModel):
    """The annotation of one image in the seed format."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    words: dict[str, Word] = Field(default_factory=dict)


class _SeedFile(BaseModel):
    model_config = ConfigDict(extra="ignore")
    images: dict[str, Any]


_ENTRY = TypeAdapter(ImageEntry)
_POINTS = TypeAdapter(Word.model_fields["points"].annotation)


@dataclass(frozen=True)
class ImagePolygons:
    """The polygons of one image.

    Attributes:
        polygons: one float32 (N, 2) array of ``(x, y)`` points per word.
        ignore: bool (P,); True marks a don't-care word (ICDAR ``###``).
    """

    polygons: list[np.ndarray]
    ignore: np.ndarray

    def __len__(self) -> int:
        return len(self.polygons)


@dataclass
class Annotations:
    """The parsed annotations of one split.

    Attributes:
        source: the JSON file or the ICDAR ground-truth directory.
        images: image file name -> its polygons, sorted by name.
        dropped: degenerate polygons dropped (fewer than 3 distinct points or zero area).
        bad: image file name -> error, for entries left out in lenient mode.
    """

    source: Path
    images: dict[str, ImagePolygons]
    dropped: int = 0
    bad: dict[str, str] = field(default_factory=dict)


_MAPPINGS = ("images", "words")  # fields whose keys are names chosen by the user


def format_loc(loc: tuple[Any, ...]) -> str:
    """A pydantic error location as a path: ``images."a.jpg".words."0003".points[1][0]``.

    Field names stay bare; the keys of ``images`` and ``words`` (file names, word ids)
    are quoted, since they may contain dots.
    """
    out = ""
    key_next = False
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        text = json.dumps(str(part)) if key_next else str(part)
        out += f".{text}" if out else text
        key_next = not key_next and part in _MAPPINGS
    return out


def _first_error(exc: ValidationError, prefix: tuple[Any, ...]) -> str:
    err = exc.errors(include_url=False)[0]
    where = format_loc(prefix + tuple(err["loc"]))
    more = f" (and {exc.error_count() - 1} more errors)" if exc.error_count() > 1 else ""
    return f"{where}: {err['msg']}{more}" if where else f"{err['msg']}{more}"


def is_degenerate(points: np.ndarray) -> bool:
    """True for fewer than 3 distinct points or a polygon of zero area."""
    if len(np.unique(points, axis=0)) < 3:
        return True
    return bool(shapely.area(shapely.polygons(points.astype(np.float64))) <= 0.0)


def _polygons(
    raw: list[list[tuple[float, float]]], ignore: list[bool]
) -> tuple[ImagePolygons, int]:
    polys: list[np.ndarray] = []
    flags: list[bool] = []
    dropped = 0
    for pts, ign in zip(raw, ignore, strict=True):
        arr = np.asarray(pts, dtype=np.float32).reshape(-1, 2)
        if is_degenerate(arr):
            dropped += 1
            continue
        polys.append(arr)
        flags.append(ign)
    return ImagePolygons(polys, np.asarray(flags, dtype=bool)), dropped


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read annotation file: {exc.strerror or exc}") from None
    try:
        # utf-8-sig drops the byte-order mark ICDAR files start with.
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _log_summary(result: Annotations) -> None:
    if result.dropped:
        log.warning(
            "%s: dropped %d degenerate polygons (fewer than 3 distinct points or zero area)",
            result.source,
            result.dropped,
        )
    if result.bad:
        log.warning(
            "%s: skipped %d images with invalid annotations, first: %s",
            result.source,
            len(result.bad),
            next(iter(result.bad.values())),
        )


def parse_seed_json(path: str | Path, *, strict: bool = True) -> Annotations:
    """Parse a seed-format annotation file.

    Args:
        path: the JSON file.
        strict: raise on the first invalid image entry; with False, leave the entry out
            and record it in :attr:`Annotations.bad`.

    Returns:
        The split's annotations.

    Raises:
        ValueError: unreadable file, invalid JSON, no ``images`` object, or (strict) an
            invalid entry; the message names the file and the path inside it.
    """
    path = Path(path)
    text = _read_text(path)
    try:
        top = _SeedFile.model_validate_json(text)
    except ValidationError as exc:
        raise ValueError(f"{path}: {_first_error(exc, ())}") from None
    result = Annotations(source=path, images={})
    for name in sorted(top.images):
        try:
            entry = _ENTRY.validate_python(top.images[name])
        except ValidationError as exc:
            msg = f"{path}: {_first_error(exc, ('images', name))}"
            if strict:
                raise ValueError(msg) from None
            result.bad[name] = msg
            continue
        raw = [w.points for w in entry.words.values()]
        result.images[name], dropped = _polygons(raw, [False] * len(raw))
        result.dropped += dropped
    _log_summary(result)
    return result


def parse_icdar2015_file(path: str | Path) -> tuple[ImagePolygons, int]:
    """Parse one ICDAR 2015 ``gt_*.txt`` file.

    Returns:
        The image's polygons and the number of degenerate polygons dropped.

    Raises:
        ValueError: unreadable file or a bad line; names the file and line number.
    """
    path = Path(path)
    text = _read_text(path).lstrip(_BOM)
    raw: list[list[tuple[float, float]]] = []
    ignore: list[bool] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        fields = line.split(",", 8)
        if len(fields) < 9:
            raise ValueError(
                f"{path}: line {lineno}: expected x1,y1,...,x4,y4,transcription "
                f"(9 comma-separated fields), got {len(fields)}"
            )
        try:
            nums = [float(f) for f in fields[:8]]
        except ValueError:
            raise ValueError(
                f"{path}: line {lineno}: coordinates must be numbers, got {fields[:8]}"
            ) from None
        try:
            pts = _POINTS.validate_python([(nums[i], nums[i + 1]) for i in range(0, 8, 2)])
        except ValidationError as exc:
            raise ValueError(f"{path}: line {lineno}: {_first_error(exc, ('points',))}") from None
        raw.append(pts)
        ignore.append(fields[8].strip() == "###")
    return _polygons(raw, ignore)


def parse_icdar2015_dir(
    directory: str | Path, image_names: list[str], *, strict: bool = True
) -> Annotations:
    """Parse the ground truth of ``image_names`` from an ICDAR 2015 directory.

    Args:
        directory: holds ``gt_<stem>.txt`` for every image ``<stem>.<ext>``.
        image_names: the image file names (relative to the image directory).
        strict: raise on a missing or invalid file; with False, record it in ``bad``.

    Raises:
        ValueError: the directory is missing, or (strict) a missing or invalid file.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"{directory}: ICDAR 2015 ground truth must be a directory")
    result = Annotations(source=directory, images={})
    for name in sorted(image_names):
        gt = directory / f"gt_{Path(name).stem}.txt"
        try:
            if not gt.is_file():
                raise ValueError(f"{gt}: ground-truth file for image {name!r} not found")
            result.images[name], dropped = parse_icdar2015_file(gt)
            result.dropped += dropped
        except ValueError as exc:
            if strict:
                raise
            result.bad[name] = str(exc)
    _log_summary(result)
    return result
