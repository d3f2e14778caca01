"""A user's files: input read with a reason when it cannot be, output written atomically, with normal
permissions, and checked before the work; YAML that does not parse reported with its line.

``read_user_text`` reads a user's text file (YAML, CSV, ...) as UTF-8 and turns every way that can fail
(no such file, a folder, no permission, bytes that are not UTF-8) into an :class:`InputError` that names
the file, says why, and what to change.

``write_atomic`` writes through a temporary file in the target's folder and a rename, so a reader
never sees half a file. The temporary file is created like ``open(path, "w")`` would create it
(mode 0o666 less the umask), not with ``mkstemp``'s private 0o600, so the result is as readable as
any other file the user writes. ``check_output_path`` refuses, before any long work starts, an
output path that is a folder or that lies where no file can be written.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path

from budgetloop.errors import InputError


def read_user_text(path: str | Path, *, what: str = "the file") -> str:
    """The text of a user's file, decoded as UTF-8 (a leading byte-order mark dropped).

    Raises :class:`InputError` naming the file, with the message ``cannot read {what}: <why>`` and a fix,
    where the file does not exist, is a folder, cannot be read, or is not UTF-8 text (the message gives
    the first offending byte, its 1-based position in the file and its line).
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise InputError(
            f"cannot read {what}: it does not exist", file=str(p), fix="check the path"
        ) from None
    except IsADirectoryError:
        raise InputError(
            f"cannot read {what}: it is a folder, not a file",
            file=str(p),
            fix="give the path of the file itself",
        ) from None
    except PermissionError:
        raise InputError(
            f"cannot read {what}: permission denied", file=str(p), fix="make the file readable"
        ) from None
    except OSError as exc:
        raise InputError(
            f"cannot read {what}: {exc.strerror or exc}", file=str(p), fix="check the path"
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(
            f"cannot read {what}: it is not UTF-8 text "
            f"(byte {exc.start + 1} of the file, on line {line}, is 0x{data[exc.start]:02x})",
            file=str(p),
            fix="save the file as UTF-8",
        ) from None
    return text.removeprefix("\ufeff")


def write_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file in the same folder and a rename."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = p.parent / f".{p.name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, flags, 0o666)  # the umask applies, as for a plain open()
        except FileExistsError:
            continue
        break
    else:  # pragma: no cover - 100 random names taken
        raise FileExistsError(f"no free temporary name beside {p}")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_output_path(path: str | Path, *, flag: str = "--out") -> None:
    """Raise :class:`InputError` naming ``flag`` and the path unless a file can be written there.

    Folders that do not exist yet are fine (the writer creates them) as long as they can be created;
    nothing is left behind by the check.
    """
    p = Path(path)
    if p.is_dir():
        raise InputError(
            f"{p} is a folder, not a file",
            key=flag,
            fix=f"give a file name, e.g. {flag} {p / 'out.json'}",
        )
    folder = p.parent
    missing = folder
    while not missing.exists():
        if missing.parent == missing:
            break
        missing = missing.parent
    if missing.exists() and not missing.is_dir():
        raise InputError(
            f"cannot write {p}: {missing} is a file, not a folder",
            key=flag,
            fix="choose a path inside an existing folder",
        )
    try:
        probe = tempfile.mkdtemp(prefix=f".{p.name}.", suffix=".probe", dir=missing)
    except OSError as exc:
        raise InputError(
            f"cannot write {p}: no file can be created in {missing} ({exc.strerror or exc})",
            key=flag,
            fix="choose a folder you can write to",
        ) from None
    shutil.rmtree(probe, ignore_errors=True)


def check_output_folder(path: str | Path, *, flag: str) -> None:
    """Raise :class:`InputError` naming ``flag`` unless files can be written into the folder ``path``
    (created by the writer where it does not exist yet); nothing is left behind by the check."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InputError(
            f"{p} is a file, not a folder",
            key=flag,
            fix=f"give a folder (it is created if missing) other than the file {p.name}",
        )
    check_output_path(p / "plot.png", flag=flag)


def write_output(path: str | Path, text: str, *, flag: str = "--out") -> None:
    """``write_atomic`` for a command's output: an OS error becomes an :class:`InputError` naming ``flag``."""
    try:
        write_atomic(path, text)
    except OSError as exc:
        raise InputError(
            f"cannot write {path}: {exc.strerror or exc}", key=flag, fix="choose a path you can write to"
        ) from None


def invalid_yaml(exc: Exception, *, source: str) -> InputError:
    """The :class:`InputError` for a YAML file that does not parse (``exc``: PyYAML's error),
    naming the line and column where PyYAML has them."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc)
    return InputError(f"invalid YAML{where}: {problem}", file=source, fix="fix the YAML syntax")


def reject_duplicate_keys(text: str, *, source: str) -> None:
    """Raise :class:`InputError` at the first mapping key given twice in a YAML document (PyYAML
    keeps the last silently, so a priors or scenario file could say one thing and mean another),
    naming its dotted path and both lines. Text that does not parse is left to the caller's loader."""
    import yaml

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return
    stack: list[tuple[yaml.Node, str]] = [(root, "")] if root is not None else []
    seen_nodes: set[int] = set()
    while stack:
        node, path = stack.pop()
        if id(node) in seen_nodes:  # an alias: walked once
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            for key_node, value_node in node.value:
                key = str(key_node.value)
                line = key_node.start_mark.line + 1
                where = f"{path}.{key}" if path else key
                if key in first:
                    raise InputError(
                        f"duplicate key at line {line} (first given on line {first[key]})",
                        file=source,
                        key=where,
                        fix="keep one of them; YAML would silently use the last",
                    )
                first[key] = line
                stack.append((value_node, where))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, f"{path}[{i}]") for i, item in enumerate(node.value))
