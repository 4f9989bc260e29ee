"""Reading untrusted files: regular files only, sizes checked before reading, bounded.

Every stage that opens a file it was handed (a spec, an import, a data set, a checkpoint)
goes through here, so a FIFO, a device (`/dev/zero`, perhaps behind a symlink) or a
multi-gigabyte file is refused before a byte is read, and an archive's members are sized
from their headers before anything is inflated.
"""
from __future__ import annotations

import os
import resource
import stat
import zipfile
from pathlib import Path
from typing import IO

import numpy as np

from netspec.diagnostics import Diagnostic, NetspecError

MAX_SPEC_BYTES = 2_000_000  # the parser's limit on source text (netspec.parser)


class FileLimitError(Exception):
    """A file is not a regular file, is too large, or declares more than memory holds."""

    def __init__(self, path: str | Path, message: str):
        self.path, self.message = str(path), message
        super().__init__(f"{path}: {message}")


def available_memory() -> int:
    """Bytes this process may still allocate: the kernel's MemAvailable, capped by the
    address-space limit (ulimit -v / RLIMIT_AS) where one is set."""
    avail = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = 1 << 62
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        avail = min(avail, soft)
    return avail


def format_bytes(n: float) -> str:
    """1536 -> "1.5 KiB"; the unit people read memory in."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} EiB"  # pragma: no cover


def open_regular(path: str | Path, what: str = "file") -> IO[bytes]:
    """Open `path` for binary reading if it is a regular file (after symlinks).

    The open is non-blocking, so a FIFO is seen and refused instead of hanging; the type
    is checked on the opened descriptor, so a swap between check and open cannot slip by.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise FileLimitError(path, exc.strerror or str(exc)) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                    else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                    else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
            raise FileLimitError(path, f"is {kind}, not a regular {what}")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path: str | Path, limit: int, what: str = "file") -> bytes:
    """The whole of a regular file of at most `limit` bytes (sized by fstat, then read
    with a cap in case it grows meanwhile)."""
    with open_regular(path, what) as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise FileLimitError(path, f"{what} is too large ({size:,} bytes; the limit is "
                                       f"{limit:,})")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise FileLimitError(path, f"{what} grew past the limit of {limit:,} bytes while read")
    return data


def check_fits(path: str | Path, nbytes: int, what: str, budget: int | None = None) -> None:
    """Refuse to build `nbytes` of arrays when the machine cannot hold them."""
    budget = available_memory() if budget is None else budget
    if nbytes > budget:
        raise FileLimitError(path, f"{what} declares {format_bytes(nbytes)} "
                                   f"({nbytes:,} bytes), more than the "
                                   f"{format_bytes(budget)} of memory available")


def _member_nbytes(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> int:
    """Bytes the array in one .npy member would take, from its header alone."""
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        reader = {(1, 0): np.lib.format.read_array_header_1_0,
                  (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if reader is None:
            raise ValueError(f"unsupported .npy version {version}")
        shape, _, dtype = reader(member, max_header_size=10_000)
    if dtype.hasobject:
        raise ValueError("object arrays (pickles) are refused")
    count = 1
    for n in shape:
        count *= int(n)
    return count * dtype.itemsize


def load_npz(path: str | Path, what: str = "archive",
             budget: int | None = None) -> dict[str, np.ndarray]:
    """Every array of an .npz, each member sized from its zip and .npy headers (never by
    inflating it) and the total checked against the memory available before reading."""
    budget = available_memory() if budget is None else budget
    with open_regular(path, what) as f, zipfile.ZipFile(f) as archive:
        infos = [i for i in archive.infolist() if i.filename.endswith(".npy")]
        declared = sum(i.file_size for i in infos)
        check_fits(path, declared, f"{what} (unpacked members)", budget)
        total = 0
        for info in infos:
            nbytes = _member_nbytes(archive, info)
            if nbytes > info.file_size:
                raise ValueError(f"member {info.filename} declares {nbytes:,} bytes of "
                                 f"data but holds {info.file_size:,}")
            total += nbytes
        check_fits(path, total, what, budget)
        out = {}
        for info in infos:
            with archive.open(info) as member:
                out[info.filename[:-4]] = np.lib.format.read_array(
                    member, allow_pickle=False)
        return out


def read_spec_text(path: str | Path, what: str = "spec") -> str:
    """A spec file's text: a regular file of at most MAX_SPEC_BYTES, UTF-8. Errors are
    NetspecErrors naming the file."""
    try:
        data = read_bytes(path, MAX_SPEC_BYTES, what)
    except FileLimitError as exc:
        raise NetspecError(Diagnostic("error", str(exc))) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise NetspecError(Diagnostic("error", f"{path}: not a text file (UTF-8)")) from None
