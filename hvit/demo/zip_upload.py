"""A user's own data set, uploaded as a zip in the `HViTDataset` layout: checked, then unpacked safely.

Everything the archive's directory can tell is checked before a single byte is written: the zip's
size, the number of members, what they expand to in all and relative to the zip (zip bombs), member
names (length, depth, ``..`` and absolute paths, links, a file and a folder of the same name, the same
file twice), encrypted members and compression methods Python cannot read. Then every member is
decompressed once without being written, so a damaged member (a bad CRC, a truncated stream) is found
before extraction too. Only then is the zip unpacked, in chunks, and read back as a data set. When
anything fails, the extraction folder is removed; `UnpackedDataset.cleanup` removes an accepted one.
"""

from __future__ import annotations

import io
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import BinaryIO

from hvit.demo.inputs import IMAGE_SUFFIXES

MAX_ZIP_BYTES = 100 * 2**20  # the upload itself
MAX_UNZIPPED_BYTES = 500 * 2**20  # what it may expand to in all
MAX_ZIP_FILES = 50_000  # members, files and folders together
# Expanded size / zipped size. Images are compressed already (PNG, JPEG: about 1), uncompressed BMP or
# TIFF files of flat drawings reach tens; a zip bomb reaches hundreds or thousands. Judged only once the
# archive expands to more than RATIO_FLOOR_BYTES, below which no ratio can hurt.
MAX_COMPRESSION_RATIO = 100
RATIO_FLOOR_BYTES = 16 * 2**20
MAX_NAME_BYTES = 255  # one file or folder name (the limit of common file systems)
MAX_PATH_CHARS = 1024  # a whole member path
MAX_PATH_DEPTH = 32  # folders in a member path
_CHUNK = 2**20
_READABLE_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
_REZIP = "zip the data set folder again with a standard tool (no password, default compression)"


class DatasetZipError(ValueError):
    """An uploaded zip cannot be used as a data set; the message says why and what would work."""


@dataclass
class UnpackedDataset:
    """A data set unpacked from a zip into a folder of its own.

    Use it as a context manager, or call `cleanup` when the data set is no longer needed.

    Attributes:
        root: the data set root (the folder holding ``train/``), for `HViTDataset` or ``--data``.
        classes: the class names of the ``train`` split.
        folder: the extraction folder that `cleanup` removes (``root`` or its parent).
    """

    root: Path
    classes: list[str]
    folder: Path

    def cleanup(self) -> None:
        """Remove the extraction folder and everything in it (again: nothing)."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> UnpackedDataset:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()


def unpack_dataset_zip(data: bytes, parent: str | Path | None = None) -> UnpackedDataset:
    """Check and unpack a zipped data set into a new temporary folder (see `extract_dataset_zip`).

    Args:
        data: the zip file's bytes.
        parent: where to create the folder (default: the system's temporary folder).

    Returns:
        The unpacked data set; its folder is removed by ``cleanup()`` or on leaving a ``with`` block.

    Raises:
        DatasetZipError: the zip cannot be used; nothing is left on disk.
    """
    folder = Path(tempfile.mkdtemp(prefix="hvit-zip-", dir=parent))
    root = extract_dataset_zip(data, folder)  # removes the folder when it refuses the zip
    return UnpackedDataset(root=root, classes=folder_classes(root), folder=folder)


def extract_dataset_zip(data: bytes, dest: str | Path) -> Path:
    """Check and unpack a zipped data set in the `HViTDataset` layout.

    Accepted: ``train/<class>/<image>`` (and optionally ``val/<class>/<image>``) at the top of the zip
    or inside one top folder, with at least two class folders of images. Hidden files and macOS's
    ``__MACOSX`` folder are left out. Refused with a clear message, before anything is written: a zip
    over `MAX_ZIP_BYTES`, more than `MAX_ZIP_FILES` members, an expansion beyond `MAX_UNZIPPED_BYTES` or
    `MAX_COMPRESSION_RATIO` times the zip, names longer than `MAX_NAME_BYTES` (a path longer than
    `MAX_PATH_CHARS` or deeper than `MAX_PATH_DEPTH`), absolute paths or ``..``, links, a file and a
    folder of the same name, the same file twice, encrypted or damaged members, and other layouts.
    Refused after unpacking: a split the data set reader rejects (e.g. a class folder without images).

    Args:
        data: the zip file's bytes.
        dest: an empty (or not yet existing) folder to unpack into. It is removed, with whatever was
            unpacked, when the zip is refused or the extraction fails.

    Returns:
        The data set root (``dest``, or the single top folder inside it that holds ``train/``).

    Raises:
        DatasetZipError: see above.
        ValueError: ``dest`` is a folder that is not empty (nothing is touched then).
    """
    dest = Path(dest)
    if dest.is_dir() and any(dest.iterdir()):
        raise ValueError(f"'{dest}' is not empty; give an empty or new folder to unpack the zip into")
    try:
        dest.mkdir(parents=True, exist_ok=True)
        root = _extract(data, dest)
        _check_splits(root)
    except OSError as err:  # e.g. the disk is full: nothing the zip can be blamed for
        shutil.rmtree(dest, ignore_errors=True)
        raise DatasetZipError(
            f"the zip could not be unpacked on the server ({err}); try again later"
        ) from err
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return root


def folder_classes(root: str | Path) -> list[str]:
    """Class names of a data set folder's ``train`` split; raises with the layout problem in words."""
    from hvit.data import HViTDataset

    return list(HViTDataset(root, split="train").classes)


# --------------------------------------------------------------------------------------------------
# The checks, in the order they run
# --------------------------------------------------------------------------------------------------


def _extract(data: bytes, dest: Path) -> Path:
    if len(data) > MAX_ZIP_BYTES:
        raise DatasetZipError(
            f"the zip is {len(data) / 2**20:.0f} MiB; the limit is {MAX_ZIP_BYTES // 2**20} MiB. "
            "Use fewer or smaller images (a few hundred per class is plenty for a lesson)."
        )
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise DatasetZipError(f"the file is not a readable zip archive ({err}); upload a .zip file") from err
    with archive:
        infos = archive.infolist()
        if len(infos) > MAX_ZIP_FILES:
            raise DatasetZipError(
                f"the zip holds {len(infos):,} files and folders; the limit is {MAX_ZIP_FILES:,}"
            )
        _check_sizes(infos, len(data))
        members = _check_names(infos)
        for m in members.values():
            _check_readable(m)
        prefix = _layout_prefix(list(members))
        for m in members.values():  # decompress everything once, writing nothing: finds damage
            _check_intact(archive, m)
        for path, m in members.items():
            target = dest.joinpath(*PurePosixPath(path).parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "xb") as out:
                _decompress(archive, m, out)
    return dest.joinpath(*PurePosixPath(prefix).parts)


def _check_sizes(infos: list[zipfile.ZipInfo], zip_bytes: int) -> None:
    total = sum(m.file_size for m in infos)
    if total > MAX_UNZIPPED_BYTES:
        raise DatasetZipError(
            f"the zip expands to {total / 2**20:.0f} MiB; the limit is {MAX_UNZIPPED_BYTES // 2**20} MiB. "
            "Use fewer or smaller images."
        )
    ratio = total / max(1, zip_bytes)
    if total > RATIO_FLOOR_BYTES and ratio > MAX_COMPRESSION_RATIO:
        raise DatasetZipError(
            f"the zip is {zip_bytes / 2**20:.1f} MiB but expands to {total / 2**20:.0f} MiB, "
            f"{ratio:.0f} times its size (the limit is {MAX_COMPRESSION_RATIO}): this is how zip bombs "
            "look. Zip images saved as PNG or JPEG, which are compressed already."
        )


def _check_names(infos: list[zipfile.ZipInfo]) -> dict[str, zipfile.ZipInfo]:
    """``{normalised path: member}`` of the files to unpack; refuses unsafe or conflicting names."""
    files: dict[str, zipfile.ZipInfo] = {}
    folders: set[str] = set()
    for m in infos:
        name = m.filename.replace("\\", "/")  # some Windows tools write backslashes
        path = PurePosixPath(name)
        if name.startswith("/") or ".." in path.parts or (path.parts and ":" in path.parts[0]):
            raise DatasetZipError(
                f"the zip contains the unsafe path {m.filename!r} (absolute or with '..'); "
                "zip the data set folder itself, with relative paths only"
            )
        longest = max(path.parts, key=lambda p: len(p.encode()), default="")
        if len(longest.encode()) > MAX_NAME_BYTES or len(name) > MAX_PATH_CHARS:
            raise DatasetZipError(
                f"the zip contains a name too long to unpack ({_short(longest)}, {len(longest)} "
                f"characters); names may be at most {MAX_NAME_BYTES} bytes and paths "
                f"{MAX_PATH_CHARS} characters: rename it"
            )
        if len(path.parts) > MAX_PATH_DEPTH:
            raise DatasetZipError(
                f"the zip contains a path {len(path.parts)} folders deep ({_short(name)}); the limit is "
                f"{MAX_PATH_DEPTH}. Expected train/<class name>/<image file>"
            )
        if stat.S_ISLNK(m.external_attr >> 16):
            raise DatasetZipError(f"the zip contains a link ({m.filename!r}); only plain files are accepted")
        if not path.parts or path.parts[0] == "__MACOSX" or any(p.startswith(".") for p in path.parts):
            continue  # macOS's resource forks and hidden files are not part of the data set
        folders.update(str(p) for p in path.parents if str(p) != ".")
        if m.is_dir():
            folders.add(str(path))
            continue
        if str(path) in files:
            raise DatasetZipError(
                f"the zip contains {m.filename!r} twice; each file may appear once. Zip the folder again"
            )
        files[str(path)] = m
    clash = sorted(set(files) & folders)
    if clash:
        raise DatasetZipError(
            f"the zip contains both a file and a folder named {clash[0]!r}; rename one of them"
        )
    return files


def _short(text: str, keep: int = 40) -> str:
    return repr(text if len(text) <= keep else f"{text[:keep]}...")


def _check_readable(m: zipfile.ZipInfo) -> None:
    if m.flag_bits & 0x1:
        raise DatasetZipError(f"the zip's member {m.filename!r} is encrypted (password-protected); {_REZIP}")
    if m.compress_type not in _READABLE_METHODS:
        raise DatasetZipError(
            f"the zip's member {m.filename!r} uses a compression method this server cannot read "
            f"(method {m.compress_type}, e.g. Deflate64); {_REZIP}"
        )


def _layout_prefix(paths: list[str]) -> str:
    """``""`` or ``"<top folder>/"``: where ``train/`` is; refuses other layouts."""
    tops = {PurePosixPath(p).parts[0] for p in paths if len(PurePosixPath(p).parts) > 1}
    prefix = f"{next(iter(tops))}/" if "train" not in tops and len(tops) == 1 else ""
    classes = {
        PurePosixPath(p[len(prefix) :]).parts[1]
        for p in paths
        if p.startswith(f"{prefix}train/")
        and len(PurePosixPath(p[len(prefix) :]).parts) >= 3
        and PurePosixPath(p).suffix.lower() in IMAGE_SUFFIXES
    }
    if len(classes) < 2:
        found = ", ".join(sorted(tops)[:5]) or "no folders"
        raise DatasetZipError(
            "the zip is not in the expected layout train/<class name>/<image file> with at least two "
            f"class folders of images (found at the top: {found}). Optionally add val/<class name>/..."
        )
    return prefix


def _decompress(archive: zipfile.ZipFile, m: zipfile.ZipInfo, out: BinaryIO | None = None) -> None:
    """Decompress one member in chunks, into ``out`` or nowhere (zipfile checks the CRC at the end)."""
    with archive.open(m) as src:
        while chunk := src.read(_CHUNK):
            if out is not None:
                out.write(chunk)


def _check_intact(archive: zipfile.ZipFile, m: zipfile.ZipInfo) -> None:
    try:
        _decompress(archive, m)
    # BadZipFile (a bad CRC), zlib.error, EOFError (truncated), lzma / bz2 errors: all mean damage.
    except Exception as err:
        raise DatasetZipError(f"the zip's member {m.filename!r} is damaged ({err}); {_REZIP}") from err


def _check_splits(root: Path) -> None:
    """Read every split back as `HViTDataset` does, so a layout problem is found here, in words."""
    from hvit.data import HViTDataset, ImageReadError

    for split in ("train", "val"):
        if split == "train" or (root / split).is_dir():
            try:
                HViTDataset(root, split=split)
            except (FileNotFoundError, ImageReadError) as err:
                raise DatasetZipError(str(err).replace(f"{root}/", "")) from err
