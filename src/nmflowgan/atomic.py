"""Writes that are all-or-nothing: a temporary file beside the target, flushed, then renamed over it."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from nmflowgan.errors import OutputExistsError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path in ``path``'s folder; on success it is fsynced and renamed to ``path``.

    On any error the temporary file is removed and ``path`` is left as it was, so a crash or a full disk
    never leaves a half-written file under the final name.
    """
    path = Path(path)
    # Created like any file the user writes (mode 0666 less the umask), not with mkstemp's private 0600.
    temp = _temporary(path)
    try:
        os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as error:  # name the file the user asked for, not the hidden temporary one
        raise OSError(error.errno, f"cannot write {path} ({error.strerror or error})") from None
    try:
        yield temp
        with open(temp, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(temp, path)
    finally:
        if temp.exists():
            temp.unlink()


def _temporary(path: Path) -> Path:
    """A hidden, unique name beside ``path`` for a file that is not complete yet."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")


def write_together(files: dict[Path, bytes], overwrite: bool) -> None:
    """Writes several files so that they land together or not at all (an image and its sidecar).

    Every file is first written and fsynced under a temporary name beside its target; only then are they
    moved into place. Without ``overwrite`` each is placed by a hard link, which fails when the target has
    appeared meanwhile (another run, another program): that file is refused with
    :class:`~nmflowgan.errors.OutputExistsError`, and what was already placed is taken back. Any failure (a full
    disk) is raised as ``OSError`` naming the target, and no temporary file is left.
    """
    temps: dict[Path, Path] = {}
    placed: list[Path] = []
    try:
        for path, data in files.items():
            temps[path] = temp = _temporary(path)
            try:
                with open(temp, "xb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
            except OSError as error:
                raise OSError(error.errno, f"cannot write {path} ({error.strerror or error})") from None
        for path, temp in temps.items():
            if overwrite:
                try:
                    os.replace(temp, path)
                except OSError as error:
                    raise OSError(error.errno, f"cannot write {path} ({error.strerror or error})") from None
            else:
                try:
                    os.link(temp, path)
                except FileExistsError:
                    raise OutputExistsError(f"{path}: appeared while this run was working (another run or "
                                            "program wrote it); not replaced, pass --overwrite to replace it") from None
                except OSError:  # a file system without hard links: check, then rename (a narrow race remains)
                    if path.exists():
                        raise OutputExistsError(f"{path}: appeared while this run was working; not replaced, pass "
                                                "--overwrite to replace it") from None
                    os.replace(temp, path)
            placed.append(path)
    except BaseException:
        for path in placed if not overwrite else []:
            path.unlink(missing_ok=True)
        raise
    finally:
        for temp in temps.values():
            temp.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as temp:
        temp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode())
