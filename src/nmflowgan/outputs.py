"""Where commands write, and what they may replace.

File-to-file commands (``synthesize``, ``denoise``) mirror IN's names under OUT, as PNG. A command that writes a
folder (``simulate``, ``evaluate``, a demo's data set) replaces with ``--overwrite`` only a folder it recognizes as
its own output: never a folder of other files, a symbolic link, a file, the current folder or one of its parents,
or a folder holding one of its inputs (:func:`check_output_folder`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from nmflowgan.data.io import IMAGE_SUFFIXES, MAX_PIXELS, read_rgb
from nmflowgan.errors import BadInputError, DataError, OutputExistsError


def input_images(source: Path, out: Path, max_pixels: int = MAX_PIXELS) -> list[tuple[Path, Path]]:
    """``(image, name relative to IN)`` for ``source`` itself or every image under it (recursively, sorted),
    each decoded once (RGB, at most ``max_pixels``, one frame, not truncated) so that a bad input stops a job
    before anything is written: a truncated file's header alone reads fine.

    Refuses an OUT folder inside the IN folder and an IN without images.
    """
    if source.is_dir() and out.resolve().is_relative_to(source.resolve()):
        raise BadInputError(f"{out}: the output folder is inside the input folder {source}")
    if source.is_file():
        images, root = [source], source.parent
    elif source.is_dir():
        images = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        root = source
    else:
        raise DataError(f"{source}: no such image file or folder")
    if not images:
        raise DataError(f"{source}: no PNG, JPEG or TIFF images found")
    for image in images:
        read_rgb(image, max_pixels)
    return [(image, image.relative_to(root)) for image in images]


def output_path(source: Path, out: Path, relative: Path, suffix: str = "") -> Path:
    """OUT itself when one input file goes to an OUT ending in ``.png`` (and no suffix is needed), else
    ``OUT/relative`` with ``suffix`` added to the name and ``.png`` as extension."""
    if source.is_file() and out.suffix.lower() == ".png" and not suffix:
        return out
    return out / relative.parent / f"{relative.stem}{suffix}.png"


def numbered(targets: Sequence[Path], own: Sequence[bool] | None = None) -> list[Path]:
    """``targets`` with every repeat numbered. ``own[i]``: target ``i`` keeps its input's own name (a PNG input
    whose output mirrors it); such a target is never renumbered. Inputs ``a.jpg``, ``a.png`` and ``a_2.png`` map
    to ``a.png``, ``a.png`` and ``a_2.png``: ``a.png`` and ``a_2.png`` keep their names and ``a.jpg`` is written
    as ``a_3.png`` (never a name another output has). The numbering follows the sorted inputs, so it is the
    same on every run."""
    own = list(own) if own is not None else [False] * len(targets)
    taken = set(targets)
    chosen: list[Path | None] = [None] * len(targets)
    seen: set[Path] = set()
    for index, target in enumerate(targets):  # inputs that already have their output's name keep it
        if own[index] and target not in seen:
            chosen[index] = target
            seen.add(target)
    for index, target in enumerate(targets):
        if chosen[index] is not None:
            continue
        candidate, number = target, 1
        while candidate in seen or (number > 1 and candidate in taken):
            number += 1
            candidate = target.with_name(f"{target.stem}_{number}{target.suffix}")
        seen.add(candidate)
        chosen[index] = candidate
    return [path for path in chosen if path is not None]


def check_targets(out: Path, targets: Sequence[Path], overwrite: bool, inputs: Sequence[Path] = ()) -> None:
    """Raises before any work when ``out`` has an image file's name but would be made a folder, when an output
    (image or sidecar) is one of the ``inputs`` (never, even with ``overwrite``: the input would be gone), is a
    folder (an image and its sidecar must land together, so neither may be left unwritable), exists and
    ``overwrite`` is off, or would land outside ``out`` (:func:`refuse_outside`)."""
    inside = [t for t in targets if out in t.parents]
    if out.suffix.lower() in IMAGE_SUFFIXES and out.suffix.lower() != ".png" and inside:
        raise BadInputError(f"{out}: outputs are written as PNG images; name a .png file (one input at one camera and "
                            "ISO) or a folder")
    if out.suffix.lower() in IMAGE_SUFFIXES and inside:
        raise BadInputError(f"{out}: names an image file, but this run writes {len(inside)} files into it as a "
                            "folder (several inputs, or several cameras/ISOs per input); name a folder instead")
    sources = {path.resolve() for path in inputs}
    clobbered = [t for t in targets if t.resolve() in sources]
    if clobbered:
        raise BadInputError(f"{clobbered[0]}: is an input of this run; an output may never replace an input "
                            "(choose another output)")
    folders = [t for t in targets if t.is_dir()]
    if folders:
        raise BadInputError(f"{folders[0]}: is a folder where this run writes a file; --overwrite replaces files only")
    existing = [t for t in targets if t.exists() or t.is_symlink()]
    if existing and not overwrite:
        raise OutputExistsError(f"{existing[0]}: exists ({len(existing)} outputs do); pass --overwrite to replace")
    refuse_outside(out, targets)


def refuse_outside(out: Path, targets: Sequence[Path]) -> None:
    """Raises when a target would land outside ``out`` (a folder), e.g. through a symbolic link to a folder
    elsewhere that sits inside ``out``. When ``out`` is itself an output file, its folder is the bound. Call
    it before any work and again after creating a target's folders."""
    root = out.parent if out in targets else out  # OUT is itself the output file
    for target in targets:
        folder = target.parent  # the deepest folder of the target's path that exists below OUT, if any
        while folder != root and not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if folder != root and not folder.resolve().is_relative_to(root.resolve()):
            raise BadInputError(f"{target}: would be written outside the output folder {out} (through "
                                f"{folder} -> {folder.resolve()})")


def make_parent(out: Path, target: Path) -> None:
    """Creates ``target``'s folder inside ``out`` and checks that it really is inside."""
    target.parent.mkdir(parents=True, exist_ok=True)
    refuse_outside(out, [target])


def check_output_folder(out: Path, what: str, is_own: Callable[[Path], bool], overwrite: bool,
                        inputs: Sequence[Path] = ()) -> None:
    """Checks, before any work, that folder ``out`` may receive a command's output ``what`` (e.g. "a simcam data
    set"): it is absent or empty, or, with ``overwrite``, a folder for which ``is_own(out)`` says this project wrote
    it as such an output. Raises naming ``out`` and the problem otherwise."""
    refuse_unsafe_folder(out, inputs)
    if not out.exists() or not any(out.iterdir()):
        return
    if not is_own(out):
        raise OutputExistsError(f"{out}: holds files that are not {what} written by nmflowgan; --overwrite "
                                f"replaces only {what}, so choose a new or empty folder")
    if not overwrite:
        raise OutputExistsError(f"{out}: holds {what} already (pass --overwrite to replace it)")


def refuse_unsafe_folder(out: Path, inputs: Sequence[Path] = ()) -> None:
    """Refuses an output folder that no command may fill or replace: a symbolic link, an existing file, the current
    folder or one of its parents, or a folder that holds one of ``inputs``."""
    if out.is_symlink():
        raise BadInputError(f"{out}: is a symbolic link (to {out.resolve()}); name a real folder for the output")
    if out.exists() and not out.is_dir():
        raise BadInputError(f"{out}: is a file, not a folder; name a folder for the output")
    resolved = out.resolve()
    if Path.cwd().resolve().is_relative_to(resolved):
        raise BadInputError(f"{out}: is the current folder or one of its parents; name a new folder for the output")
    for source in inputs:
        if Path(source).resolve().is_relative_to(resolved):
            raise BadInputError(f"{out}: holds the input {source}; an output may never replace an input")
