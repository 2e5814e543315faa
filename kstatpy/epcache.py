"""A cache of the ``kstatpy.providers`` entry-point scan, for the embedded ``kstat``.

``importlib.metadata.entry_points()`` imports a dozen modules and reads the metadata
of every installed distribution, on every run: most of what loading providers costs a
short-lived ``kstat``. The cache keeps its answer in a file until the installed
distributions change.

File
    ``$KSTATPY_CACHE_DIR/entry-points.cache``, else ``$XDG_CACHE_HOME/kstatpy/...``,
    else ``~/.cache/kstatpy/...``. ``KSTATPY_CACHE_DIR=off`` disables the cache. A
    cache that cannot be read or written is ignored (the scan is then made every time).
    Written atomically: a temporary file of a random name created with
    ``O_CREAT|O_EXCL|O_NOFOLLOW`` in an ``O_NOFOLLOW`` descriptor of the directory, then
    renamed over the cache (a rename replaces a planted symbolic link, never writes
    through it). The cache is used only in a directory owned by root or this user and
    writable by nobody else, and read only from a regular file that is the same
    (``fstat`` of the opened descriptor, opened ``O_NONBLOCK`` so that a FIFO cannot
    hang it), at most :data:`MAX_CACHE_BYTES`: the cache
    names modules to import, so another user's file is never trusted nor written
    (issue 21: ``sudo -E``, a shared ``KSTATPY_CACHE_DIR``). UTF-8 text, one record
    a line, fields separated by tabs (a backslash, tab or newline in a field is
    written ``\\``, ``\t``, ``\n``): ``kstatpy-epcache 2``; ``group G``; ``key K``
    (the ``repr`` of :func:`fingerprint`'s list); ``ep NAME VALUE`` per entry point, in
    scan order; ``decl NAME FILE MTIME HAS MODULE...`` per remembered declaration
    (FILE and MTIME empty for None; HAS ``0``: no ``KSTATPY_MODULES``). Not JSON:
    ``json`` imports ``re``, which the embedded ``kstat`` otherwise never needs.

Invalidation (:func:`fingerprint`)
    The key is, for each ``sys.path`` entry, the name of each ``*.dist-info`` /
    ``*.egg-info`` in it with the mtime of its ``entry_points.txt``. pip's install,
    upgrade and uninstall add, rename or remove a dist-info directory, and a reinstall
    or an egg-info rewritten by ``setup.py develop`` rewrites entry_points.txt. The
    directories' own mtimes are left out on purpose: ``sys.path[0]`` is often the
    current directory, which changes all the time. The interpreter's version is part
    of the key too.

Declared modules
    A provider module may set ``KSTATPY_MODULES``: the kstat module names it ever
    creates kstats under (exact names). The cache remembers the declaration, keyed by
    the provider file's mtime, so that the next run can skip importing a provider
    whose modules no selector can match (:func:`kstatpy.plugins.load_providers`'s
    ``wants_module``).
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["EntryPointCache", "cache_path", "dumps", "fingerprint", "loads"]

_MAGIC = "kstatpy-epcache 2"
#: The largest cache file read (bytes); a bigger one is ignored.
MAX_CACHE_BYTES = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def _trusted(st: os.stat_result) -> bool:
    # Owned by root or us, and no one else may write it.
    return st.st_uid in (0, os.geteuid()) and not st.st_mode & 0o022


def _open_dir(path: str, create: bool) -> int:
    # An O_NOFOLLOW descriptor of the cache's directory, or -1 when it is not ours to use.
    directory = os.path.dirname(path)
    if create:
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        except OSError:
            return -1
    try:
        fd = os.open(directory, _DIR_FLAGS)
    except OSError:
        return -1
    if not _trusted(os.fstat(fd)):
        os.close(fd)
        return -1
    return fd


def cache_path() -> str | None:
    """The cache file's path, or None when the cache is off."""
    base = os.environ.get("KSTATPY_CACHE_DIR")
    if base == "off":
        return None
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(xdg, "kstatpy")
    return os.path.join(base, "entry-points.cache")


def fingerprint(paths: list[str] | None = None) -> list[Any]:
    """The invalidation key of the module docstring, for ``paths`` (default ``sys.path``)."""
    out: list[Any] = [sys.version]
    for entry in sys.path if paths is None else paths:
        metas = []
        try:
            with os.scandir(entry or ".") as it:
                for de in it:
                    name = de.name
                    if name.endswith((".dist-info", ".egg-info")):
                        try:
                            ep_mtime = os.stat(os.path.join(de.path, "entry_points.txt")).st_mtime_ns
                        except OSError:
                            ep_mtime = 0
                        metas.append([name, ep_mtime])
        except OSError:  # missing, a zip file, or unreadable
            out.append([entry, None])
            continue
        metas.sort()
        out.append([entry, metas])
    return out


def _file_mtime(path: str | None) -> int | None:
    if not path:
        return None
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


class EntryPointCache:
    """One group's cached scan: ``entry_points`` and the providers' declared modules."""

    def __init__(self, group: str, path: str | None = None) -> None:
        self.group = group
        self.path = cache_path() if path is None else path
        self.hit = False
        self.dirty = False
        self.entry_points: list[tuple[str, str]] = []
        self._declared: dict[str, Any] = {}
        key = fingerprint()
        data = self._read()
        if data is not None and data.get("key") == repr(key) and data.get("group") == group:
            self.hit = True
            self.entry_points = [(n, v) for n, v in data["entry_points"]]
            self._declared = data.get("declared", {})
        else:
            self.entry_points = self._scan()
            self.dirty = True
        self._key = key

    def _read(self) -> dict[str, Any] | None:
        if self.path is None:
            return None
        dfd = _open_dir(self.path, create=False)
        if dfd < 0:
            return None
        try:
            # O_NONBLOCK: a FIFO at the cache's path would block the open until a writer came.
            fd = os.open(os.path.basename(self.path), _FILE_FLAGS, dir_fd=dfd)
        except OSError:
            return None
        finally:
            os.close(dfd)
        try:
            st = os.fstat(fd)
            if not (st.st_mode & 0o170000 == 0o100000 and _trusted(st) and st.st_size <= MAX_CACHE_BYTES):
                return None
            data = os.read(fd, MAX_CACHE_BYTES + 1)
            if len(data) > MAX_CACHE_BYTES:
                return None
            return loads(data.decode("utf-8", "surrogateescape"))
        except (OSError, ValueError):
            return None
        finally:
            os.close(fd)

    def _scan(self) -> list[tuple[str, str]]:
        from importlib.metadata import entry_points

        seen = set()
        out = []
        for ep in entry_points(group=self.group):
            if ep.name not in seen:  # the first distribution on sys.path wins, as importlib's
                seen.add(ep.name)
                out.append((ep.name, ep.value))
        return out

    def declared_modules(self, name: str) -> list[str] | None:
        """The modules provider ``name`` declared when last loaded (None: unknown or stale)."""
        entry = self._declared.get(name)
        if not entry or entry.get("mtime") is None or _file_mtime(entry.get("file")) != entry["mtime"]:
            return None
        modules = entry.get("modules")
        return list(modules) if isinstance(modules, list) else None

    def remember(self, name: str, plugin: Any) -> None:
        """Record ``plugin.KSTATPY_MODULES`` (or its absence) for provider ``name``."""
        file = getattr(plugin, "__file__", None)
        modules = getattr(plugin, "KSTATPY_MODULES", None)
        entry = {
            "file": file,
            "mtime": _file_mtime(file),
            "modules": [m for m in modules if isinstance(m, str)] if isinstance(modules, (list, tuple)) else None,
        }
        if self._declared.get(name) != entry:
            self._declared[name] = entry
            self.dirty = True

    def save(self) -> None:
        """Write the cache if anything changed; failures are ignored (see the module docstring)."""
        if not self.dirty or self.path is None:
            return
        data = {"group": self.group, "key": repr(self._key), "entry_points": self.entry_points,
                "declared": self._declared}  # fmt: skip
        dfd = _open_dir(self.path, create=True)
        if dfd < 0:
            return
        name = os.path.basename(self.path)
        tmp = f".{name}.{os.urandom(8).hex()}.tmp"  # unpredictable, and O_EXCL: never someone else's file
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(tmp, flags, 0o644, dir_fd=dfd)
            try:
                body = dumps(data).encode("utf-8", "surrogateescape")
                view = memoryview(body)
                while view:  # os.write may write less than asked
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            self.dirty = False
        except OSError:
            try:
                os.unlink(tmp, dir_fd=dfd)
            except OSError:
                pass
        finally:
            os.close(dfd)


_ESC = {"\\": "\\\\", "\t": "\\t", "\n": "\\n"}
_UNESC = {"\\": "\\", "t": "\t", "n": "\n"}


def _esc(field: str) -> str:
    return "".join(_ESC.get(ch, ch) for ch in field) if "\\" in field or "\t" in field or "\n" in field else field


def _unesc(field: str) -> str:
    if "\\" not in field:
        return field
    out, it = [], iter(field)
    for ch in it:
        out.append(_UNESC[next(it)] if ch == "\\" else ch)  # KeyError/StopIteration: malformed
    return "".join(out)


def dumps(data: dict[str, Any]) -> str:
    """The cache file's text for ``data`` (``group``, ``key``, ``entry_points``, ``declared``)."""
    lines = [_MAGIC, "group\t" + _esc(data["group"]), "key\t" + _esc(data["key"])]
    lines += ["ep\t" + _esc(name) + "\t" + _esc(value) for name, value in data["entry_points"]]
    for name, d in data["declared"].items():
        modules = d.get("modules")
        fields = [name, d.get("file") or "", "" if d.get("mtime") is None else str(d["mtime"]),
                  "0" if modules is None else "1", *(modules or ())]  # fmt: skip
        lines.append("decl\t" + "\t".join(map(_esc, fields)))
    return "\n".join(lines) + "\n"


def loads(text: str) -> dict[str, Any] | None:
    """:func:`dumps`'s data back, or None for a file of another version or malformed."""
    lines = text.split("\n")
    if lines[0] != _MAGIC or lines[-1] != "":
        return None
    data: dict[str, Any] = {"entry_points": [], "declared": {}}
    try:
        for line in lines[1:-1]:
            kind, *fields = [_unesc(f) for f in line.split("\t")]
            if kind in ("group", "key") and len(fields) == 1:
                data[kind] = fields[0]
            elif kind == "ep" and len(fields) == 2:
                data["entry_points"].append((fields[0], fields[1]))
            elif kind == "decl" and len(fields) >= 4 and fields[3] in ("0", "1"):
                name, file, mtime, has, *modules = fields
                data["declared"][name] = {"file": file or None, "mtime": int(mtime) if mtime else None,
                                          "modules": modules if has == "1" else None}  # fmt: skip
            else:
                return None
    except (KeyError, StopIteration, ValueError):
        return None
    return data if "group" in data and "key" in data else None


def load_value(value: str) -> Any:
    """An entry point's object: ``module`` or ``module:attr.attr`` (as ``EntryPoint.load``)."""
    module, _, attrs = value.partition(":")
    module = module.strip()
    # __import__ then sys.modules is importlib.import_module for an absolute name,
    # without importing the importlib package (which imports warnings).
    __import__(module)
    obj = sys.modules[module]
    for attr in filter(None, attrs.strip().split(".")):
        obj = getattr(obj, attr)
    return obj
