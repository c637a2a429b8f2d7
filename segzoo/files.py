"""Writing outputs: atomically, never over an input, never over an existing output unless asked.

Every file or folder segzoo writes goes through :func:`atomic_write`: the content
is written to a temporary name in the destination's own folder, then moved into
place with :func:`os.replace`, so a reader (or a process killed half-way) sees
either the old file or the complete new one, never a truncated one.

One overwrite rule for every command, :func:`check_output`: an output that
resolves to one of the inputs is always refused; an output that exists is
refused unless ``overwrite`` (``--overwrite``) was given. :func:`check_writable`
tries a folder before any work starts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import uuid

from segzoo.errors import OutputExistsError, OutputNotWritableError, option, switch

#: Prefix of the temporary names :func:`atomic_write` uses (left behind only by a killed process).
PARTIAL_PREFIX = ".partial-"


def _temporary_name(path: str) -> str:
    """A fresh name beside ``path`` that keeps its whole suffix (``.keras``, ``.weights.h5``, ``.webm``)."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f"{PARTIAL_PREFIX}{uuid.uuid4().hex[:12]}.{name}")


def _fsync(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


@contextlib.contextmanager
def atomic_write(path, folder: bool = False):
    """Yield a temporary path beside ``path``; on success move it into place, on error remove it.

    Write the file (or, with ``folder``, fill the folder, which is not created)
    at the yielded path. When the block ends without an exception, the file is
    flushed to disk and renamed over ``path`` in one step (:func:`os.replace`);
    a folder replaces an existing one (the old one is moved aside first, then
    deleted). The parent folder is created when missing.
    """
    path = os.path.abspath(os.fspath(path))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = _temporary_name(path)
    try:
        yield temporary
        if not os.path.lexists(temporary):
            raise FileNotFoundError(f"{path}: nothing was written.")
        if folder:
            old = None
            if os.path.lexists(path):
                old = _temporary_name(path)
                os.replace(path, old)
            os.replace(temporary, path)
            if old is not None:
                _remove(old)
        else:
            _fsync(temporary)
            os.replace(temporary, path)
            _fsync(os.path.dirname(path))
    finally:
        if os.path.lexists(temporary):
            _remove(temporary)


def write_json(path, value, **dump_options) -> str:
    """Write ``value`` as indented JSON to ``path``, atomically; returns the path."""
    with atomic_write(path) as temporary:
        with open(temporary, "w", encoding="utf-8") as f:
            json.dump(value, f, indent=2, **dump_options)
    return os.fspath(path)


def file_digest(path) -> str:
    """SHA-256 of the file ``path``, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _same_path(a: str, b: str) -> bool:
    if os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


def check_output(path, inputs=(), overwrite: bool = False, name: str = "output") -> str:
    """Apply the overwrite rule to the output ``path``; returns it as an absolute path.

    Args:
        path: the file or folder to be written.
        inputs: paths read by the same command (``None`` entries skipped).
        overwrite: whether an existing output may be replaced.
        name: the option that names ``path``, for the messages.

    Raises:
        OutputExistsError: ``path`` resolves to one of ``inputs`` (always), or it
            exists (a folder: holds anything) and ``overwrite`` is false.
    """
    path = os.path.abspath(os.fspath(path))
    for source in inputs:
        if source is not None and isinstance(source, (str, os.PathLike)) and _same_path(path, os.fspath(source)):
            raise OutputExistsError(f"{path}: {option(name)} names an input of this command ({os.fspath(source)}); "
                                    f"it would be destroyed. Choose another {option(name)}.")
    taken = os.path.isfile(path) or (os.path.isdir(path) and os.listdir(path)) or os.path.islink(path)
    if taken and not overwrite:
        kind = "folder is not empty" if os.path.isdir(path) else "file exists"
        raise OutputExistsError(f"{path}: the {option(name)} {kind}. Pass {switch('overwrite')} to replace it, "
                                f"or choose another {option(name)}.")
    return path


def is_within(path, folder) -> bool:
    """Whether ``path`` is ``folder`` or lies below it, links resolved."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


def check_output_folder(path, inputs=(), overwrite: bool = False, name: str = "output", input_folders=()) -> str:
    """:func:`check_output` for a folder to be written: a file at ``path`` is refused too; returns the absolute path.

    ``input_folders`` (``None`` entries skipped): folders the command reads; the output may neither lie inside
    one (its files would be read as inputs) nor hold one (replacing the output would delete it).

    Raises:
        OutputExistsError: ``path`` is a file, an input, inside or around one of ``input_folders``, or a folder
            that holds anything (without ``overwrite``).
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.lexists(path) and not os.path.isdir(path):
        raise OutputExistsError(f"{path}: the {option(name)} exists and is not a folder. Choose another "
                                f"{option(name)}.")
    for folder in input_folders:
        if folder is not None and (is_within(path, folder) or is_within(folder, path)):
            where = "inside" if is_within(path, folder) else "around"
            raise OutputExistsError(f"{path}: the {option(name)} folder is {where} the input folder "
                                    f"{os.fspath(folder)}; writing it would read or delete that input. Choose "
                                    f"another {option(name)}.")
    return check_output(path, inputs, overwrite, name)


def check_writable(folder, name: str = "output") -> str:
    """Create ``folder`` if needed and try writing a file in it, before any work starts.

    Raises:
        OutputNotWritableError: naming the folder and the system's reason.
    """
    folder = os.path.abspath(os.fspath(folder))
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=PARTIAL_PREFIX):
            pass
    except OSError as error:
        raise OutputNotWritableError(f"{folder}: cannot write there ({error.strerror or error}). Choose another "
                                     f"{option(name)}, or fix its permissions.") from error
    return folder


def check_output_file(path, inputs=(), overwrite: bool = False, name: str = "output") -> str:
    """:func:`check_output` for a file, then :func:`check_writable` of its folder; returns the absolute path."""
    path = check_output(path, inputs, overwrite, name)
    if os.path.isdir(path):
        raise OutputExistsError(f"{path}: {option(name)} is a folder; it must name a file.")
    check_writable(os.path.dirname(path), name)
    return path
