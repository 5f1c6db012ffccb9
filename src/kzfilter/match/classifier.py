"""The compiled, immutable rule set: single and batch verdicts for names and addresses.

A Classifier holds its rules as columns (pattern, kind, action, category, source, ...), the compiled
name automaton and the IP prefix set.  ``clf.rules[i]`` rebuilds the i-th ``Rule`` on demand, so a
classifier loaded from a file costs no Python object per rule until one is asked for.

Precedence (see README, "Rule semantics"): the most specific name rule wins — exact, then the domain or
wildcard rule with the longest suffix, then keywords, longest first; for addresses the longest prefix
wins; at equal specificity allow beats block beats monitor; then the earlier rule.  The automaton and
the prefix set only compare the integer priorities computed here.
"""
from __future__ import annotations

import io
import ipaddress
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence, Union

import numpy as np

from .._build_check import import_compiled
from ..errors import InvalidAddressError, InvalidNameError, KzfilterError
from ..rules.model import ACTION_RANK, ACTIONS, KINDS, Rule, RuleSet, parse_address_pattern
from ..rules.normalize import normalize_name

_automaton = import_compiled("kzfilter.match._automaton")
_prefixes = import_compiled("kzfilter.match._prefixes")

__all__ = ["Classifier", "Match", "BatchResult", "RuleTable"]

AddressLike = Union[str, int, ipaddress.IPv4Address, ipaddress.IPv6Address]

_KIND_CODE = {k: i for i, k in enumerate(KINDS)}          # exact 0, domain 1, wildcard 2, keyword 3, ip 4
_ACTION_CODE = {a: i for i, a in enumerate(ACTIONS)}      # block 0, allow 1, monitor 2
_TIER = {0: 0, 1: 1, 2: 1, 3: 2}                          # exact; domain/wildcard; keyword
# Object arrays indexed by action code; index -1 (no match) falls on the trailing None.
ACTION_NAMES = np.array(list(ACTIONS) + [None], dtype=object)
_MAGIC = b"KZFILTR1"


@dataclass(frozen=True)
class Match:
    """The verdict for one name or address.

    ``rule`` is the winning rule and ``action``/``category`` are its own; ``lists`` and
    ``categories`` name every list and category that matched (a name can be on several lists),
    winner first.  ``matched`` holds every matching rule, best first.
    """

    query: str
    rule_id: int
    rule: Rule
    matched: tuple[Rule, ...]

    @property
    def action(self) -> str:
        return self.rule.action

    @property
    def category(self) -> str:
        return self.rule.category

    @property
    def kind(self) -> str:
        return self.rule.kind or ""

    @property
    def lists(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.source for r in self.matched))

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.category for r in self.matched if r.category))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready verdict: query, action, category, rule, kind, lists, categories."""
        return {
            "query": self.query, "action": self.action, "category": self.category,
            "rule": str(self.rule), "kind": self.kind, "lists": list(self.lists),
            "categories": list(self.categories),
        }


class BatchResult:
    """Verdicts of a batch call, as numpy arrays (no Python object per query).

    ``rule_id`` (int32, -1 = no match), ``action_code`` (int8: -1 none, else index in ``ACTIONS``),
    ``status`` (uint8: 0 ok, 1 not a valid host name; always 0 for addresses).  ``action`` and
    ``category`` are object arrays of strings (None where nothing matched), built on first access.
    """

    __slots__ = ("rule_id", "status", "_clf", "_cache")

    def __init__(self, clf: "Classifier", rule_id: np.ndarray, status: np.ndarray) -> None:
        self.rule_id = rule_id
        self.status = status
        self._clf = clf
        self._cache: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.rule_id)

    @property
    def matched(self) -> np.ndarray:
        return self.rule_id >= 0

    @property
    def action_code(self) -> np.ndarray:
        if "action_code" not in self._cache:
            table = np.append(self._clf._actions.astype(np.int8), np.int8(-1))
            self._cache["action_code"] = table[self.rule_id]
        return self._cache["action_code"]

    @property
    def action(self) -> np.ndarray:
        if "action" not in self._cache:
            self._cache["action"] = ACTION_NAMES[self.action_code]
        return self._cache["action"]

    @property
    def category(self) -> np.ndarray:
        if "category" not in self._cache:
            table = np.array(self._clf._category_names + [None], dtype=object)
            codes = np.append(self._clf._categories, np.int32(len(self._clf._category_names)))
            self._cache["category"] = table[codes[self.rule_id]]
        return self._cache["category"]

    def __repr__(self) -> str:
        return f"BatchResult({len(self)} queries, {int(self.matched.sum())} matched)"


class RuleTable(Sequence[Rule]):
    """Read-only sequence of a classifier's rules, rebuilt from columns on access (and cached)."""

    def __init__(self, clf: "Classifier") -> None:
        self._clf = clf
        self._cache: dict[int, Rule] = {}

    def __len__(self) -> int:
        return len(self._clf._patterns)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = int(i)
        if i < 0:
            raise IndexError("rule id -1 means 'no match'; there is no rule -1")
        rule = self._cache.get(i)
        if rule is None:
            rule = self._cache[i] = self._clf._build_rule(i)
        return rule

    def __iter__(self) -> Iterator[Rule]:
        return (self[i] for i in range(len(self)))


def _interned(values: list[str]) -> tuple[list[str], np.ndarray]:
    table: dict[str, int] = {}
    codes = np.fromiter((table.setdefault(v, len(table)) for v in values), dtype=np.int32, count=len(values))
    return list(table), codes


class _Memo(dict[Any, Any]):
    """A dict that empties itself when full: per-classifier caches of derived values, bounded."""

    LIMIT = 1 << 16

    def remember(self, key: Any, value: Any) -> Any:
        if len(self) >= self.LIMIT:
            self.clear()
        self[key] = value
        return value


class Classifier:
    """A compiled rule set: ``match_name``/``match_ip`` for one query, ``match_names``/``match_ips`` in batch.

    Built by ``RuleSet.compile()``; immutable, picklable, and saved/loaded with ``save``/``load``.

    Example:
        >>> clf = RuleSet([Rule("example.com", category="NEWS")]).compile()
        >>> clf.match_name("news.Example.com.").category
        'NEWS'
    """

    def __init__(self, rules: RuleSet | Sequence[Rule]) -> None:
        rules = list(rules)
        n = len(rules)
        self._patterns: list[str] = [r.pattern for r in rules]
        self._kinds = np.fromiter((_KIND_CODE[r.kind or "domain"] for r in rules), np.uint8, n)
        self._actions = np.fromiter((_ACTION_CODE[r.action] for r in rules), np.uint8, n)
        self._category_names, self._categories = _interned([r.category for r in rules])
        self._source_names, self._sources = _interned([r.source for r in rules])
        self._revision_names, self._revisions = _interned([r.revision for r in rules])
        self._lines = np.fromiter((r.line for r in rules), np.int64, n)
        self._paths = [r.path for r in rules]
        self._dates = [r.date_added for r in rules]
        self._build_matchers([r.networks for r in rules])
        self._rule_table = RuleTable(self)
        for i, r in enumerate(rules):  # the Rule objects we were given are the canonical ones
            self._rule_table._cache[i] = r
        self._memo = _Memo()

    # -- construction -------------------------------------------------------------------------------
    def _priority_base(self) -> np.ndarray:
        idx = np.arange(len(self._patterns), dtype=np.uint64)
        rank = np.array([ACTION_RANK[a] for a in ACTIONS], dtype=np.uint64)[self._actions]
        return (rank << np.uint64(32)) | idx

    def _build_matchers(self, networks: Sequence[tuple[Any, ...]] | None) -> None:
        base = self._priority_base()
        name_ids = np.flatnonzero(self._kinds != _KIND_CODE["ip"]).astype(np.int32)
        lengths = np.fromiter((len(self._patterns[i]) for i in name_ids), np.uint64, len(name_ids))
        tiers = np.array([_TIER[k] for k in range(4)], dtype=np.uint64)[self._kinds[name_ids]]
        prio = (tiers << np.uint64(44)) | ((np.uint64(255) - np.minimum(lengths, 255)) << np.uint64(36)) | base[name_ids]
        self._name_ids = np.append(name_ids, np.int32(-1))  # local id -> rule id; local -1 -> -1
        self._names = _automaton.NameAutomaton(
            [self._patterns[i] for i in name_ids], self._kinds[name_ids], prio)
        self._build_prefixes(networks, base)

    def _build_prefixes(self, networks: Sequence[tuple[Any, ...]] | None, base: np.ndarray) -> None:
        v4: list[tuple[int, int, int]] = []
        v6: list[tuple[bytes, int, int]] = []
        for i in np.flatnonzero(self._kinds == _KIND_CODE["ip"]).tolist():
            nets = networks[i] if networks is not None else parse_address_pattern(self._patterns[i])[1]
            for net in nets:
                if net.version == 4:
                    v4.append((int(net.network_address), net.prefixlen, int(i)))
                else:
                    v6.append((net.network_address.packed, net.prefixlen, int(i)))
        v6_net = np.frombuffer(b"".join(p for p, _, _ in v6), dtype=np.uint8).reshape(len(v6), 16)
        self._ips = _prefixes.PrefixSet(
            np.array([a for a, _, _ in v4], dtype=np.uint32), np.array([b for _, b, _ in v4], dtype=np.uint8),
            np.array([c for _, _, c in v4], dtype=np.int32),
            np.ascontiguousarray(v6_net), np.array([b for _, b, _ in v6], dtype=np.uint8),
            np.array([c for _, _, c in v6], dtype=np.int32), base)

    def _build_rule(self, i: int) -> Rule:
        rule = object.__new__(Rule)
        kind = KINDS[self._kinds[i]]
        fields = dict(
            pattern=self._patterns[i], kind=kind, action=ACTIONS[self._actions[i]],
            category=self._category_names[self._categories[i]], source=self._source_names[self._sources[i]],
            line=int(self._lines[i]), revision=self._revision_names[self._revisions[i]],
            path=self._paths[i], date_added=self._dates[i],
            networks=parse_address_pattern(self._patterns[i])[1] if kind == "ip" else (),
        )
        for key, value in fields.items():
            object.__setattr__(rule, key, value)
        return rule

    # -- introspection ------------------------------------------------------------------------------
    @property
    def rules(self) -> RuleTable:
        """The rules, indexed by rule id (``clf.rules[r.rule_id[i]]``)."""
        return self._rule_table

    def __len__(self) -> int:
        return len(self._patterns)

    def __repr__(self) -> str:
        return (f"Classifier({len(self)} rules: {len(self._name_ids) - 1} name, "
                f"{len(self) - len(self._name_ids) + 1} ip)")

    @property
    def nbytes(self) -> int:
        """Bytes held by the compiled matchers (the automaton and the prefix set)."""
        return int(self._names.nbytes) + int(self._ips.nbytes)

    # -- single queries -----------------------------------------------------------------------------
    def _match_from_ids(self, query: str, ids: np.ndarray) -> Match | None:
        if len(ids) == 0:
            return None
        matched = tuple(self.rules[int(i)] for i in ids)
        return Match(query, int(ids[0]), matched[0], matched)

    def match_name(self, name: str | bytes) -> Match | None:
        """Verdict for one host name (normalised first), or None.

        Raises:
            InvalidNameError: the name is not a valid host name (the message says why).
        """
        normal = normalize_name(name)
        local, _status = self._names.match_all(normal)
        return self._match_from_ids(normal, self._name_ids[np.asarray(local, dtype=np.int64)])

    def match_ip(self, addr: AddressLike) -> Match | None:
        """Verdict for one IPv4/IPv6 address given as text, int or ``ipaddress`` object, or None."""
        ip = _parse_address(addr)
        ids = self._ips.covering_v4(int(ip)) if ip.version == 4 else self._ips.covering_v6(int(ip))
        return self._match_from_ids(str(ip), np.asarray(ids))

    # -- batches ------------------------------------------------------------------------------------
    def match_names(self, names: Sequence[str | bytes] | np.ndarray) -> BatchResult:
        """Verdicts for many names; ``names`` is a list of str/bytes or a numpy bytes/str array.

        Names with non-ASCII characters go through IDNA in Python; all others are normalised and
        matched in C with the GIL released.  Invalid names get rule id -1 and status 1.
        """
        if isinstance(names, np.ndarray):
            names = names.tolist()
        local, status = self._names.match_list(names)
        local = np.asarray(local, dtype=np.int32)
        status = np.asarray(status, dtype=np.uint8)
        for i in np.flatnonzero(status == _automaton.STATUS_NON_ASCII).tolist():
            try:
                normal = normalize_name(names[i])
            except InvalidNameError:
                local[i], status[i] = -1, _automaton.STATUS_INVALID
                continue
            local[i], status[i] = self._names.match_one(normal)
        return BatchResult(self, self._name_ids[local], status)

    def match_names_packed(self, buf: Any, offsets: np.ndarray) -> BatchResult:
        """Like ``match_names`` for names packed back to back in ``buf`` (name i = buf[offsets[i]:offsets[i+1]])."""
        local, status = self._names.match_packed(buf, offsets)
        local = np.asarray(local, dtype=np.int32)
        status = np.asarray(status, dtype=np.uint8)
        non_ascii = np.flatnonzero(status == _automaton.STATUS_NON_ASCII)
        if len(non_ascii):
            raw = bytes(buf)
            for i in non_ascii:
                try:
                    normal = normalize_name(raw[offsets[i]:offsets[i + 1]])
                except InvalidNameError:
                    local[i], status[i] = -1, _automaton.STATUS_INVALID
                    continue
                local[i], status[i] = self._names.match_one(normal)
        return BatchResult(self, self._name_ids[local], status)

    def match_ips(self, addrs: Sequence[AddressLike] | np.ndarray) -> BatchResult:
        """Verdicts for many addresses.

        ``addrs``: a list of text/int/``ipaddress`` addresses (IPv4 and IPv6 may mix), a numpy uint32
        array (IPv4, host order), or a numpy (n, 16) uint8 array (IPv6 in network order).
        """
        if isinstance(addrs, np.ndarray):
            if addrs.ndim == 2 and addrs.shape[1] == 16 and addrs.dtype == np.uint8:
                ids = self._ips.lookup_v6(np.ascontiguousarray(addrs))
            elif addrs.ndim == 1 and addrs.dtype.kind in "ui":
                # An integer array is IPv4: a value outside 0..2**32-1 is refused, never wrapped
                # (a cast would turn -1 into 255.255.255.255).
                if addrs.dtype != np.uint32 and len(addrs) and (addrs.min() < 0 or addrs.max() > 0xFFFFFFFF):
                    raise InvalidAddressError("an integer address array holds values outside the IPv4 "
                                              "range 0..2**32-1 (use a (n, 16) uint8 array for IPv6)")
                ids = self._ips.lookup_v4(np.ascontiguousarray(addrs, dtype=np.uint32))
            else:
                raise TypeError("match_ips takes uint32[n] (IPv4) or uint8[n, 16] (IPv6) arrays, or a list")
            ids = np.asarray(ids, dtype=np.int32)
            return BatchResult(self, ids, np.zeros(len(ids), np.uint8))
        parsed = [_parse_address(a) for a in addrs]
        ids = np.full(len(parsed), -1, dtype=np.int32)
        is_v4 = np.fromiter((ip.version == 4 for ip in parsed), bool, len(parsed))
        if is_v4.any():
            v4 = np.fromiter((int(ip) for ip, f in zip(parsed, is_v4) if f), np.uint32, int(is_v4.sum()))
            ids[is_v4] = self._ips.lookup_v4(v4)
        if (~is_v4).any():
            v6 = np.frombuffer(b"".join(ip.packed for ip, f in zip(parsed, is_v4) if not f), np.uint8)
            ids[~is_v4] = self._ips.lookup_v6(np.ascontiguousarray(v6.reshape(-1, 16)))
        return BatchResult(self, ids, np.zeros(len(ids), np.uint8))

    # -- verdict columns of flow records -------------------------------------------------------------
    def _verdict_columns(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(action, category or None, str(rule))`` object arrays for rule ids (all >= 0).

        ``str(rule)`` is built once per rule and remembered, so a batch of matched flows costs
        array takes and one string per rule not seen before, not Python calls per flow.
        """
        uniq, inverse = np.unique(ids, return_inverse=True)
        memo = self._memo
        texts = np.empty(len(uniq), dtype=object)
        for j, i in enumerate(uniq.tolist()):
            text = memo.get(("rule", i))
            texts[j] = text if text is not None else memo.remember(("rule", i), str(self.rules[i]))
        categories = memo.get("categories")
        if categories is None:
            categories = memo.remember("categories", np.array(
                [c or None for c in self._category_names], dtype=object))
        return ACTION_NAMES[self._actions[ids]], categories[self._categories[ids]], texts[inverse.ravel()]

    def _flow_lists(self, query: tuple[int, bytes], rule_id: int) -> tuple[str, ...]:
        """Every list matching a flow's name or address, winner first (the ``lists`` column).

        ``query``: ``(0, raw name bytes)`` or ``(4 or 6, packed address)``; ``rule_id`` the
        winning rule, whose list stands alone when the single-query call cannot take the query
        (a name with non-ASCII bytes, read as ASCII with U+FFFD, is not a valid host name).  The
        batch calls give the winner only, hence one ``match_name``/``match_ip`` per distinct query,
        remembered for the classifier's life (a capture asks for the same few names again and again).
        """
        lists = self._memo.get(query)
        if lists is None:
            kind, raw = query
            try:
                m = (self.match_name(raw.decode("ascii", "replace")) if kind == 0
                     else self.match_ip(ipaddress.ip_address(raw)))
            except (InvalidNameError, ValueError):
                m = None
            lists = self._memo.remember(query, m.lists if m is not None else (self.rules[rule_id].source,))
        return lists

    # -- flows --------------------------------------------------------------------------------------
    def classify(self, paths: Any, *, workers: int = 1, match_client_ip: bool = False,
                 **flow_options: Any) -> Any:
        """Flow records with verdicts for a capture path or a list of paths.

        Returns a :class:`kzfilter.classify.Classification`: iterate it for records, or call
        ``to_pandas()`` / ``to_arrow()``.  ``workers`` > 1 spreads the work over N cores with the
        same records in the same order: one capture per process, or each capture read once and its
        flows split over N threads when there are fewer captures than workers (see
        :mod:`kzfilter.parallel`); ``flow_options`` go to the flow table (timeouts, max_flows, ...).
        """
        from ..classify import Classification

        return Classification(self, paths, workers=workers, match_client_ip=match_client_ip, **flow_options)

    def flow_tracker(self, *, match_client_ip: bool = False, **flow_options: Any) -> Any:
        """A tracker to feed packets yourself (raw frames or dpkt objects); its records carry verdicts."""
        from ..classify import ClassifyingTracker

        return ClassifyingTracker(self, match_client_ip=match_client_ip, **flow_options)

    # -- persistence --------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """Serialise the compiled set (columns + compiled matchers); ``from_bytes`` loads it without recompiling."""
        meta = {
            "n": len(self._patterns), "categories": self._category_names, "sources": self._source_names,
            "revisions": self._revision_names,
        }
        sections = [
            json.dumps(meta).encode(),
            "\0".join(self._patterns).encode(), "\0".join(self._paths).encode(), "\0".join(self._dates).encode(),
            self._kinds.tobytes(), self._actions.tobytes(), self._categories.tobytes(), self._sources.tobytes(),
            self._revisions.tobytes(), self._lines.tobytes(), self._name_ids.tobytes(),
            self._names.to_bytes(), self._ips.to_bytes(),
        ]
        out = io.BytesIO()
        out.write(_MAGIC + struct.pack("<I", len(sections)))
        for s in sections:
            out.write(struct.pack("<Q", len(s)))
            out.write(s)
        return out.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Classifier":
        """Load a classifier written by ``to_bytes``/``save``."""
        view = memoryview(data)
        if bytes(view[:8]) != _MAGIC:
            raise KzfilterError("not a kzfilter compiled rule file (bad magic)")
        (count,) = struct.unpack_from("<I", view, 8)
        pos, sections = 12, []
        for _ in range(count):
            (size,) = struct.unpack_from("<Q", view, pos)
            pos += 8
            if pos + size > len(view):
                raise KzfilterError("compiled rule file is truncated")
            sections.append(view[pos:pos + size])
            pos += size
        if count != 13:
            raise KzfilterError(f"compiled rule file has {count} sections, expected 13 (other kzfilter version?)")
        meta = json.loads(bytes(sections[0]))
        n = meta["n"]
        self = cls.__new__(cls)

        def split(blob: memoryview) -> list[str]:
            return bytes(blob).decode().split("\0") if n else []

        self._patterns, self._paths, self._dates = split(sections[1]), split(sections[2]), split(sections[3])
        self._kinds = np.frombuffer(sections[4], np.uint8).copy()
        self._actions = np.frombuffer(sections[5], np.uint8).copy()
        self._categories = np.frombuffer(sections[6], np.int32).copy()
        self._sources = np.frombuffer(sections[7], np.int32).copy()
        self._revisions = np.frombuffer(sections[8], np.int32).copy()
        self._lines = np.frombuffer(sections[9], np.int64).copy()
        self._name_ids = np.frombuffer(sections[10], np.int32).copy()
        self._category_names, self._source_names = meta["categories"], meta["sources"]
        self._revision_names = meta["revisions"]
        self._names = _automaton.NameAutomaton.from_bytes(bytes(sections[11]))
        self._ips = _prefixes.PrefixSet.from_bytes(bytes(sections[12]))
        self._rule_table = RuleTable(self)
        self._memo = _Memo()
        return self

    def save(self, path: str | Path) -> None:
        """Write the compiled set to ``path`` (conventionally ``*.kzr``)."""
        Path(path).write_bytes(self.to_bytes())

    @classmethod
    def load(cls, path: str | Path) -> "Classifier":
        """Read a compiled set written by ``save``: much faster than compiling the rules again."""
        return cls.from_bytes(Path(path).read_bytes())

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        return (Classifier.from_bytes, (self.to_bytes(),))


def _parse_address(addr: AddressLike) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if isinstance(addr, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return addr
    if isinstance(addr, (int, np.integer)):
        value = int(addr)
        try:
            return ipaddress.IPv4Address(value) if 0 <= value < 2**32 else ipaddress.IPv6Address(value)
        except ValueError as exc:
            raise InvalidAddressError(f"{value} is not an IP address ({exc})") from None
    text = addr.decode() if isinstance(addr, bytes) else str(addr)
    try:
        return ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError as exc:
        raise InvalidAddressError(f"{addr!r} is not an IP address ({exc})") from None
