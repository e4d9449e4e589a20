"""Recordings are self-contained: a file the user opens never makes HDF5 read another file.

HDF5 lets a file point outside itself in four ways, and h5py follows every one of them silently
the moment a dataset is read: an *external link* (a name in this file for an object in another
file), *external raw storage* (a dataset whose bytes live in other files, /etc/passwd included),
a *virtual dataset* (one assembled from datasets of other files), and a *soft link* whose path
leads to one of those. A crafted recording used them to make ``trace health`` print a local
text file as a "non-finite" reason, ``trace inspect`` show another file's losses, the app's
banner show a secret, an export copy it into an ordinary dataset, and ``--append`` write into a
different file (issue 31). Our writer never creates any of them, so :func:`check_self_contained`
refuses a file holding one — naming the object and where it points — before any data is read.
Every reader and the appending writer call it right after opening the file.

The walk reads link and object headers only (never a dataset's bytes), follows hard links only,
and is bounded: at most :data:`MAX_OBJECTS` links, soft-link chains at most :data:`MAX_SOFT_HOPS`
long (a loop is named as one). Filters are limited to the ones HDF5 and h5py build in, so a
crafted file cannot make HDF5 look for a filter plugin on the machine.
"""

from __future__ import annotations

from pathlib import Path

import h5py
from h5py import h5d, h5i, h5l, h5o, h5z

from energy_flow.trace.recording.schema import RecordingError

#: Links a recording may hold (one has about 60); more is refused rather than walked.
MAX_OBJECTS = 4096
#: Soft links resolved in a row before a chain is taken for a loop.
MAX_SOFT_HOPS = 16
#: Filters the walk accepts: deflate, shuffle, fletcher32, szip, n-bit, scale-offset (built into
#: HDF5) and lzf (built into h5py). Anything else would make HDF5 search for a plugin.
ALLOWED_FILTERS = frozenset({h5z.FILTER_DEFLATE, h5z.FILTER_SHUFFLE, h5z.FILTER_FLETCHER32,
                             h5z.FILTER_SZIP, h5z.FILTER_NBIT, h5z.FILTER_SCALEOFFSET, h5z.FILTER_LZF})


def check_self_contained(f: h5py.File, path: Path) -> None:
    """Raise :class:`RecordingError` naming ``path`` and the object if the file reaches outside
    itself (external link, external storage, virtual dataset, soft link leading out or nowhere),
    uses a filter HDF5 does not build in, or holds more than :data:`MAX_OBJECTS` links."""
    _Walk(f, Path(path)).run()


class _Walk:
    def __init__(self, f: h5py.File, path: Path):
        self.file = f
        self.path = path
        self.links = 0
        self.seen: set[int] = set()

    def refuse(self, what: str) -> RecordingError:
        return RecordingError(f"{self.path}: not self-contained: {what}; a recording must hold all its "
                              "data itself, so it is not read")

    def run(self) -> None:
        try:
            self._group(self.file.id, "/")
        except RecordingError:
            raise
        except (OSError, RuntimeError, ValueError, KeyError) as exc:
            raise RecordingError(f"{self.path}: cannot walk the file's objects ({type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else ''})") from None

    def _group(self, gid: h5py.h5g.GroupID, where: str) -> None:
        address = h5o.get_info(gid).addr
        if address in self.seen:
            return    # a hard link back to a group already walked (a cycle of hard links)
        self.seen.add(address)
        for name in _names(gid):
            self.links += 1
            if self.links > MAX_OBJECTS:
                raise self.refuse(f"more than {MAX_OBJECTS} links (a recording has about 60)")
            child = _join(where, name)
            kind = gid.links.get_info(name).type
            if kind == h5l.TYPE_EXTERNAL:
                raise self.refuse(f"{child} is an external link to {_external_target(gid, name)}")
            if kind == h5l.TYPE_SOFT:
                self._soft(child, where, gid.links.get_val(name).decode("utf-8", "replace"), 0)
                continue
            if kind != h5l.TYPE_HARD:
                raise self.refuse(f"{child} is a user-defined link (type {kind})")
            self._object(h5o.open(gid, name), child)

    def _object(self, oid: h5py.h5o.ObjectID, where: str) -> None:
        kind = h5i.get_type(oid)
        if kind == h5i.GROUP:
            self._group(oid, where)
        elif kind == h5i.DATASET:
            self._dataset(oid, where)

    def _dataset(self, did: h5py.h5d.DatasetID, where: str) -> None:
        dcpl = did.get_create_plist()
        if dcpl.get_layout() == h5d.VIRTUAL:
            sources = sorted({dcpl.get_virtual_filename(i) for i in range(dcpl.get_virtual_count())})
            raise self.refuse(f"{where} is a virtual dataset reading {', '.join(sources) or 'other files'}")
        if dcpl.get_external_count() > 0:
            files = [dcpl.get_external(i)[0].decode("utf-8", "replace")
                     for i in range(dcpl.get_external_count())]
            raise self.refuse(f"{where} keeps its data in external file(s) {', '.join(files)}")
        for i in range(dcpl.get_nfilters()):
            code = dcpl.get_filter(i)[0]
            if code not in ALLOWED_FILTERS:
                raise self.refuse(f"{where} uses filter {code}, which recordings never use")

    def _soft(self, where: str, base: str, target: str, hops: int) -> None:
        """A soft link must lead, through hard links (and further soft links), to an object of
        this file; its target object itself is walked where its hard link is."""
        if hops >= MAX_SOFT_HOPS:
            raise self.refuse(f"{where} is a soft link loop (more than {MAX_SOFT_HOPS} links in a row)")
        gid, here = (self.file.id, "/") if target.startswith("/") else (h5o.open(self.file.id, base.encode()), base)
        parts = [p for p in target.split("/") if p not in ("", ".")]
        for k, part in enumerate(parts):
            name = part.encode("utf-8")
            if h5i.get_type(gid) not in (h5i.GROUP, h5i.FILE) or not gid.links.exists(name):
                raise self.refuse(f"{where} is a soft link to {target}, which does not exist in the file")
            kind = gid.links.get_info(name).type
            if kind == h5l.TYPE_EXTERNAL:
                raise self.refuse(f"{where} is a soft link to {target}, an external link to "
                                  f"{_external_target(gid, name)}")
            if kind == h5l.TYPE_SOFT:
                inner = gid.links.get_val(name).decode("utf-8", "replace")
                rest = "/".join(parts[k + 1:])
                joined = inner.rstrip("/") + ("/" + rest if rest else "")
                self._soft(where, here, joined, hops + 1)
                return
            if kind != h5l.TYPE_HARD:
                raise self.refuse(f"{where} is a soft link through a user-defined link ({target})")
            gid, here = h5o.open(gid, name), _join(here, name)


def _names(gid: h5py.h5g.GroupID) -> list[bytes]:
    names: list[bytes] = []
    gid.links.iterate(lambda name: names.append(name) if len(names) <= MAX_OBJECTS else True)
    return names


def _join(where: str, name: bytes) -> str:
    return f"{where.rstrip('/')}/{name.decode('utf-8', 'replace')}"


def _external_target(gid: h5py.h5g.GroupID, name: bytes) -> str:
    file, obj = gid.links.get_val(name)
    return f"{obj.decode('utf-8', 'replace')} in {file.decode('utf-8', 'replace')}"
