"""The Prometheus / OpenMetrics exporter behind ``kstatd --metrics HOST:PORT``.

A consumer of the chain like the ``kstat`` command, one layer up from the server: it
reads through :class:`kstatpy.client.KstatCtl` over kstatd's own ioctl handler (the
in-process transport), so every scrape takes the same path as a client on the socket:
``chain_update`` (providers refresh), READ_MANY (hold, ``ks_lock``, ``ks_update``,
snapshot; kids stuck past ``--read-timeout`` answer EAGAIN at once) and DESCRIBE for
metadata. It reads as an unprivileged global-zone caller (docs/PROTOCOL.md §6).

Exposition is prometheus-client's: :class:`KstatCollector` yields metric families,
``start_http_server`` serves them and picks the text format or OpenMetrics from the
scrape's ``Accept`` header. No exposition code of our own.

Mapping (one series per statistic of each selected kstat)
    family   ``kstat_<module>_<statistic>``, lower case, other characters ``_``;
             then the base unit (``_seconds``, ``_bytes``, ``_hertz``, ...) unless
             the name already ends with it; counters get ``_total`` (only they end
             in it: a gauge's is ``_total_value``), text and identifiers ``_info``
    labels   ``module``, ``kstat_instance`` (``instance`` is Prometheus' own),
             ``name``, ``class``; ``_info`` series add ``value``
    type     from the metadata: counter, gauge, info (text, identifier);
             undeclared statistics are ``unknown``
    value    converted to the base unit where the metadata says so: ns/us/ms and
             ticks -> seconds, pages -> bytes, MHz -> hertz, 1/256 -> a number
RAW kstats and ``kstat_*`` names are left out, as kstat(8) does; so are the pseudo
statistics ``crtime`` and ``snaptime`` and those with ``no_source`` (docs/PROTOCOL.md §9.3).

The exporter's own series: ``kstat_exporter_scrape_duration_seconds`` (this scrape,
so far), ``kstat_exporter_scrape_errors_total`` (reads that failed, samples dropped
as duplicates or type conflicts, scrapes refused while another was stuck, since
start), ``kstat_exporter_series`` (series in this scrape, these three excluded) and
``kstat_exporter_kstats`` (kstats read in this scrape).

Panics: a read that touches freed memory (BadTrap) is handed to ``on_panic`` (kstatd's
own panic path: crash dump, then halt or EFAULT-and-continue per ``--on-panic``).

Concurrency: scrapes are serialised by ``_lock`` (one KstatCtl); a scrape that cannot get
it within ``lock_timeout`` seconds (another is stuck in a provider) exports only the
exporter's own series, with the error counted.

The HTTP server, its paths and its bounds (a whole-connection deadline, the slot a
slowloris gives up to a new connection) are :mod:`kstatpy.exporter_http`'s.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.core import InfoMetricFamily
from prometheus_client.core import Metric
from prometheus_client.core import UnknownMetricFamily
from prometheus_client.registry import CollectorRegistry

from kstatpy.client import KstatCtl
from kstatpy.constants import GLOBAL_ZONEID
from kstatpy.describe import kstat_describe
from kstatpy.exporter_http import METRICS_CONN_TIMEOUT
from kstatpy.exporter_http import METRICS_MAX_CONNECTIONS
from kstatpy.exporter_http import start_server
from kstatpy.ioctl import Conn
from kstatpy.ioctl import Cred
from kstatpy.kmem import BadTrap
from kstatpy.metadata import COUNTER
from kstatpy.metadata import GAUGE
from kstatpy.metadata import IDENTIFIER
from kstatpy.metadata import TEXT
from kstatpy.metadata import StatMeta
from kstatpy.metadata import base_unit
from kstatpy.select import RegexError
from kstatpy.select import SelectorPatterns
from kstatpy.select import operand_fields
from kstatpy.transport import ChainTransport

__all__ = ["Exporter", "KstatCollector", "metric_name", "parse_listen", "parse_select"]

log = logging.getLogger(__name__)

LABELS = ("module", "kstat_instance", "name", "class")
_RAW, _NAMED, _INTR, _IO, _TIMER = 0, 1, 2, 3, 4
_BAD = re.compile(r"[^a-z0-9_]")
_PSEUDO = ("crtime", "snaptime")
# promlint's abbreviated units (a whole "_"-separated token), and hertz's.
_ABBREVIATIONS = frozenset({"s", "ms", "us", "ns", "sec", "b", "kb", "mb", "gb", "tb", "pb", "m", "h", "d"})
_HERTZ = frozenset({"hz", "mhz", "khz", "ghz"})


def parse_select(text: str) -> SelectorPatterns:
    """One ``--metrics-select`` operand (kstat's ``module:instance:name:statistic``).

    :raises ValueError: more than four fields, or a regex that does not compile.
    """
    fields = operand_fields(text)
    if fields is None:
        raise ValueError(f"{text!r}: at most module:instance:name:statistic")
    sel = SelectorPatterns(*fields)
    for pat in (sel.module, sel.instance, sel.name, sel.statistic):
        try:
            pat.match("")
        except RegexError as exc:
            raise ValueError(f"{text!r}: {exc}") from None
    return sel


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9100`` for IPv6) -> (host, port). :raises ValueError."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r}: expected HOST:PORT")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return host or "0.0.0.0", int(port)


def metric_name(module: str, stat: str, unit: str, typ: str = "counter") -> str:
    """The family name of a statistic (see the module docstring), without ``_total``/``_info``.

    Abbreviated units in the statistic's name go (``read_timeout_ms`` in seconds is
    ``read_timeout_seconds``, ``clock_MHz`` in hertz ``clock_hertz``), as Prometheus'
    naming lint (``promtool check metrics``) asks. Only a counter ends in ``_total``: any
    other ``typ`` would end in ``_total_value``.
    """
    drop = _ABBREVIATIONS | (_HERTZ if unit == "hertz" else frozenset())
    tokens = [t for t in _BAD.sub("_", stat.lower()).split("_") if t not in drop]
    name = "_".join(["kstat", _BAD.sub("_", module.lower()), *(tokens or ["value"])])
    if unit and not name.endswith("_" + unit):
        name += "_" + unit
    if typ != COUNTER and name.endswith("_total"):
        name += "_value"
    return name


def _values(ksp: Any) -> dict[str, Any]:
    t, data = ksp.ks_type, ksp.ks_data
    if t == _NAMED:
        return {r.name: r.value for r in data or () if r.name}
    if t in (_IO, _INTR) and data:
        return dict(data)
    if t == _TIMER and data:
        return dict(data[0])
    return {}


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.split(b"\0", 1)[0].decode("utf-8", "replace")
    return "" if value is None else str(value)


class KstatCollector:
    """A prometheus-client collector over one KstatCtl (see the module docstring)."""

    def __init__(
        self,
        kc: KstatCtl,
        selectors: list[SelectorPatterns] | None = None,
        lock_timeout: float = 5.0,
        on_panic: Callable[[BadTrap], None] | None = None,
    ) -> None:
        self.kc = kc
        self.on_panic = on_panic
        self.selectors = selectors or [parse_select("")]
        self.lock_timeout = lock_timeout
        self._lock = threading.Lock()  # one scrape at a time: guards kc, _meta, errors
        self._meta: dict[tuple[int, int], dict[str, StatMeta | None]] = {}
        self._names: dict[tuple[str, str, str, str], str] = {}  # (module, statistic, unit, type) -> family
        self.errors = 0

    def describe(self) -> list[Metric]:
        """No families up front: the chain decides at each scrape."""
        return []

    def collect(self) -> Iterator[Metric]:
        """One scrape: read the selected kstats, yield their families and our own."""
        t0 = time.perf_counter()
        families: list[Metric] = []
        kstats = 0
        if self._lock.acquire(timeout=self.lock_timeout):
            try:
                kstats = self._scrape(families)
            except BadTrap as trap:  # a provider touched freed memory: kstatd's panic
                self.errors += 1
                families = []
                if self.on_panic is None:
                    raise
                self.on_panic(trap)
            except Exception as exc:  # the scrape fails, kstatd does not
                log.warning("metrics scrape failed: %r", exc)
                self.errors += 1
                families = []
            finally:
                self._lock.release()
        else:
            self.errors += 1
        yield from families
        series = sum(len(f.samples) for f in families)
        yield GaugeMetricFamily("kstat_exporter_scrape_duration_seconds", "Time this scrape took so far.",
                                value=time.perf_counter() - t0, unit="seconds")  # fmt: skip
        yield CounterMetricFamily("kstat_exporter_scrape_errors", "Failed reads and dropped samples since start.",
                                  value=self.errors)  # fmt: skip
        yield GaugeMetricFamily("kstat_exporter_series", "Series exported by this scrape (exporter's own excluded).",
                                value=series)  # fmt: skip
        yield GaugeMetricFamily("kstat_exporter_kstats", "kstats read by this scrape.", value=kstats)

    def _selected(self) -> list[tuple[Any, list[Any]]]:
        # (kstat, the statistic patterns of the selectors it matched)
        keep = []
        for ksp in self.kc.kc_chain:
            if ksp.ks_type == _RAW or ksp.ks_name.startswith("kstat_"):
                continue
            inst = str(ksp.ks_instance)
            stats = [s.statistic for s in self.selectors
                     if s.module.match(ksp.ks_module) and s.name.match(ksp.ks_name) and s.instance.match(inst)]  # fmt: skip
            if stats:
                keep.append((ksp, stats))
        return keep

    def _metadata(self, ksps: list[Any]) -> None:
        need = [k for k in ksps if (k.ks_kid, k.ks_crtime) not in self._meta]
        if need:
            for ksp, (code, desc) in zip(need, kstat_describe(self.kc, [k.ks_kid for k in need]), strict=True):
                meta: dict[str, StatMeta | None] = {}
                if not code and desc is not None:
                    for s in desc["stats"]:
                        kind = s["kind"]
                        meta[s["name"]] = None if kind is None else StatMeta(
                            kind, s["unit"] or "", s["description"] or "", s["scale"], s["data_type"], s.get("no_source")
                        )  # fmt: skip
                self._meta[(ksp.ks_kid, ksp.ks_crtime)] = meta
        live = {(k.ks_kid, k.ks_crtime) for k in ksps}
        self._meta = {k: v for k, v in self._meta.items() if k in live}

    def _scrape(self, out: list[Metric]) -> int:
        kc = self.kc
        kc.chain_update()
        selected = self._selected()
        results = kc.read_many([k for k, _ in selected]) if selected else []
        read = [(ksp, pats) for (code, ksp), (_, pats) in zip(results, selected, strict=True) if not code]
        self.errors += len(results) - len(read)
        self._metadata([k for k, _ in read])
        families: dict[str, Metric] = {}
        seen: set[tuple[str, tuple[str, ...]]] = set()
        for ksp, pats in read:
            labels = [ksp.ks_module, str(ksp.ks_instance), ksp.ks_name, ksp.ks_class]
            meta = self._meta.get((ksp.ks_kid, ksp.ks_crtime), {})
            every = any(p.matches_all for p in pats)
            for stat, value in _values(ksp).items():
                if stat in _PSEUDO or not (every or any(p.match(stat) for p in pats)):
                    continue
                if (m := meta.get(stat)) is None or not m.no_source:  # never graph an invented zero
                    self._sample(families, seen, ksp.ks_module, stat, m, value, labels)
        out.extend(families.values())
        return len(read)

    def _sample(self, families: dict[str, Metric], seen: set[Any], module: str, stat: str,
                m: StatMeta | None, value: Any, labels: list[str]) -> None:  # fmt: skip
        kind = None if m is None else m.kind
        if kind in (TEXT, IDENTIFIER):
            unit, factor, typ = "", 1.0, "info"
        elif kind in (COUNTER, GAUGE):
            unit, factor = base_unit(m)  # type: ignore[arg-type]
            typ = kind
        else:
            unit, factor, typ = "", 1.0, "unknown"
        if typ != "info":
            if not isinstance(value, (int, float)):
                return
            if factor != 1.0:
                value = value * factor
        key = (module, stat, unit, typ)
        name = self._names.get(key)
        if name is None:
            name = self._names[key] = metric_name(module, stat, unit, typ)
        fam = families.get(name)
        if fam is None:
            doc = (m.description if m is not None else "") or f"{module} statistic {stat}"
            if typ == "info":
                fam = InfoMetricFamily(name, doc, labels=LABELS)
            elif typ == COUNTER:
                fam = CounterMetricFamily(name, doc, labels=LABELS, unit=_om_unit(name, unit))
            elif typ == GAUGE:
                fam = GaugeMetricFamily(name, doc, labels=LABELS, unit=_om_unit(name, unit))
            else:
                fam = UnknownMetricFamily(name, doc, labels=LABELS)
            families[name] = fam
        elif fam.type != typ:
            self.errors += 1  # the same family name typed two ways: keep the first
            return
        series = (name, tuple(labels))
        if series in seen:
            self.errors += 1  # two kstats with the same labels (zones): keep the first
            return
        seen.add(series)
        fam.add_metric(labels, {"value": _text(value)} if typ == "info" else float(value))  # type: ignore[attr-defined]


def _om_unit(name: str, unit: str) -> str:
    # OpenMetrics' UNIT needs the name to end with it; units with "/" never reach here.
    return unit if unit and name.endswith("_" + unit) else ""


class Exporter:
    """The HTTP endpoint: :meth:`start` binds and serves in a thread, :meth:`stop` ends it.

    :param handler: kstatd's :class:`kstatpy.ioctl.IoctlHandler`.
    :param on_panic: called with the BadTrap when a scrape's read touches freed
        memory (kstatd: :meth:`kstatpy.server.Kstatd.panic`); None re-raises it.
    :raises OSError: from :meth:`start`, when the address cannot be bound.
    """

    def __init__(
        self,
        handler: Any,
        host: str,
        port: int,
        selectors: list[SelectorPatterns] | None = None,
        on_panic: Callable[[BadTrap], None] | None = None,
        conn_timeout: float = METRICS_CONN_TIMEOUT,
        max_connections: int = METRICS_MAX_CONNECTIONS,
    ) -> None:
        cred = Cred(os.getuid(), os.getgid(), os.getpid(), "global", GLOBAL_ZONEID, privileged=False)
        self.kc = KstatCtl(ChainTransport(handler, Conn(cred, id=-1)))
        self.collector = KstatCollector(self.kc, selectors, on_panic=on_panic)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)  # type: ignore[arg-type]
        self.host, self.port = host, port
        self.conn_timeout, self.max_connections = conn_timeout, max_connections
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> tuple[str, int]:
        """Serve ``/metrics``; returns the bound (host, port) (port 0 picks a free one)."""
        self._server, self._thread = start_server(
            self.host, self.port, self.registry, self.conn_timeout, self.max_connections
        )
        bound = self._server.server_address
        return bound[0], bound[1]

    def stop(self) -> None:
        """Stop serving and close the reader handle."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.kc.close()
