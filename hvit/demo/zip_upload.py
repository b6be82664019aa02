"""A user's own data set, uploaded as a zip in the `HViTDataset` layout: checked and unpacked safely
(size, file-count and path limits against zip bombs and path traversal)."""

from __future__ import annotations

import io
from pathlib import Path

from hvit.demo.inputs import IMAGE_SUFFIXES

MAX_ZIP_BYTES = 100 * 2**20  # the upload itself
MAX_UNZIPPED_BYTES = 500 * 2**20  # what it may expand to (zip bombs)
MAX_ZIP_FILES = 50_000


class DatasetZipError(ValueError):
    """An uploaded zip cannot be used as a data set; the message says why and what would work."""


def extract_dataset_zip(data: bytes, dest: str | Path) -> Path:
    """Check and unpack a zipped data set in the `HViTDataset` layout.

    Accepted: ``train/<class>/<image>`` (and optionally ``val/<class>/<image>``) at the top of the zip
    or inside one top folder. Refused with a clear message: files over `MAX_ZIP_BYTES`, archives that
    expand beyond `MAX_UNZIPPED_BYTES` or hold more than `MAX_ZIP_FILES` files, absolute paths or
    ``..`` (zip-slip), links, and layouts without a ``train`` folder of at least two class folders.

    Args:
        data: the zip file's bytes.
        dest: an empty folder to unpack into.

    Returns:
        The data set root (the folder holding ``train/``).

    Raises:
        DatasetZipError: see above.
    """
    import stat
    import zipfile
    from pathlib import PurePosixPath

    if len(data) > MAX_ZIP_BYTES:
        raise DatasetZipError(
            f"the zip is {len(data) / 2**20:.0f} MiB; the limit is {MAX_ZIP_BYTES // 2**20} MiB. "
            "Use fewer or smaller images (a few hundred per class is plenty for a lesson)."
        )
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as err:
        raise DatasetZipError(f"the file is not a readable zip archive ({err}); upload a .zip file") from err
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        names = [m.filename for m in members if not PurePosixPath(m.filename).name.startswith(".")]
        if len(members) > MAX_ZIP_FILES:
            raise DatasetZipError(f"the zip holds {len(members):,} files; the limit is {MAX_ZIP_FILES:,}")
        total = sum(m.file_size for m in members)
        if total > MAX_UNZIPPED_BYTES:
            raise DatasetZipError(
                f"the zip expands to {total / 2**20:.0f} MiB; the limit is {MAX_UNZIPPED_BYTES // 2**20} MiB"
            )
        for m in members:
            path = PurePosixPath(m.filename.replace("\\", "/"))
            if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
                raise DatasetZipError(
                    f"the zip contains the unsafe path {m.filename!r} (absolute or with '..'); "
                    "zip the data set folder itself, with relative paths only"
                )
            if stat.S_ISLNK(m.external_attr >> 16):
                raise DatasetZipError(
                    f"the zip contains a link ({m.filename!r}); only plain files are accepted"
                )
        # The layout: train/<class>/<image>, at the top or below a single folder.
        tops = {PurePosixPath(n).parts[0] for n in names if len(PurePosixPath(n).parts) > 1}
        prefix = ""
        if "train" not in tops and len(tops) == 1:
            prefix = f"{next(iter(tops))}/"
        classes = {
            PurePosixPath(n[len(prefix) :]).parts[1]
            for n in names
            if n.startswith(f"{prefix}train/")
            and len(PurePosixPath(n[len(prefix) :]).parts) >= 3
            and PurePosixPath(n).suffix.lower() in IMAGE_SUFFIXES
        }
        if len(classes) < 2:
            found = ", ".join(sorted(tops)[:5]) or "no folders"
            raise DatasetZipError(
                "the zip is not in the expected layout train/<class name>/<image file> with at least two "
                f"class folders of images (found at the top: {found}). Optionally add val/<class name>/..."
            )
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        for m in members:
            target = (dest / m.filename).resolve()
            if root not in target.parents:
                raise DatasetZipError(f"the zip path {m.filename!r} points outside the data set folder")
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(m) as src, open(target, "wb") as out:
                out.write(src.read())
    return dest / prefix.rstrip("/") if prefix else dest


def folder_classes(root: str | Path) -> list[str]:
    """Class names of a data set folder's ``train`` split; raises with the layout problem in words."""
    from hvit.data import HViTDataset

    return list(HViTDataset(root, split="train").classes)
