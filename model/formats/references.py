"""Member and provider reference data: the resources a claim points at but does not carry.

A payer's API or a bulk export sends an ExplanationOfBenefit whose patient is `Patient/1`,
whose provider is an absolute URL or `Organization?identifier=<NPI system>|<NPI>` (as
Synthea writes it), and ships those Patient, Practitioner, PractitionerRole and
Organization resources in files of their own. `References` holds them, indexed every way a
claim may name one; the FHIR adapter asks it after the claim's contained resources and its
Bundle, and the X12 adapter for a provider's taxonomy by NPI and a member without DMG
(docs/formats.md, "Reference data"):

    refs = References.load(["members.csv", "Practitioner.ndjson"])
    convert("fhir", eob_json, references=refs)

Files are read by their content, not their name:
- FHIR: NDJSON, a Bundle, a JSON array of resources or one resource. Patient,
  Practitioner, PractitionerRole and Organization are kept; other types (Coverage, …)
  are passed over. Resources are kept as JSON and validated when a claim uses one.
- CSV with a header row: members `id,birth_date,sex` (sex F, M or U; may be left out),
  providers `npi,taxonomy` (a NUCC code). A CSV provider answers to whichever provider type
  a claim names it by (Practitioner, PractitionerRole or Organization), by id or by NPI.

A file that cannot be read as any of these raises ReferenceDataError (one line naming the
file); a record that cannot be used is skipped and described in `problems`. The same
resource (type and id) given twice: the later one is kept. Everything is held in memory.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from model.formats.common import MEMBER, NPI, NUCC

PEOPLE = ("Patient", "Practitioner", "PractitionerRole", "Organization")
PROVIDERS = PEOPLE[1:]
MEMBER_COLUMNS = ("id", "birth_date")  # sex is optional: unknown when absent
PROVIDER_COLUMNS = ("npi", "taxonomy")
SEXES = {"f": "female", "female": "female", "m": "male", "male": "male", "u": "unknown",
         "unknown": "unknown", "o": "other", "other": "other", "": "unknown"}
# `Patient/1`, `Patient/1/_history/2`, `https://x.org/fhir/Patient/1`: the type and id
TAIL = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class ReferenceDataError(ValueError):
    """A references file that cannot be read at all; the message is one line."""


class References:
    """Patient, Practitioner, PractitionerRole and Organization resources by id, by URL
    and by identifier. `find` answers a reference, `by_identifier` a logical one."""

    def __init__(self) -> None:
        self._by_key: dict[str, dict] = {}  # "Patient/1" (or a fullUrl, for no id) -> resource
        self._by_url: dict[str, str] = {}  # fullUrl -> key
        self._by_ident: dict[tuple[str, str | None, str], set[str]] = {}  # (type, system, value)
        self._idents: dict[str, list[tuple[str, str | None, str]]] = {}  # key -> its index keys
        self.problems: list[str] = []  # "file line 3: why", one per record skipped

    def __len__(self) -> int:
        return len({id(r) for r in self._by_key.values()})

    @classmethod
    def load(cls, paths: Iterable[str | Path]) -> References:
        """The reference data of these files, in order. Raises ReferenceDataError."""
        refs = cls()
        for path in paths:
            refs.read_file(path)
        return refs

    @classmethod
    def of_bundle(cls, entries: Iterable[tuple[Any, Any]]) -> References:
        """The people among a Bundle's (resource, fullUrl) entries; the rest is ignored."""
        refs = cls()
        for res, url in entries:
            if isinstance(res, dict) and res.get("resourceType") in PEOPLE:
                refs.add(res, url if isinstance(url, str) else None)
        return refs

    # -- lookup -------------------------------------------------------------------------

    def find(self, target: str, kinds: Collection[str]) -> list[dict]:
        """The resources of `kinds` that a reference names: relative (`Patient/1`),
        absolute (a Bundle entry's fullUrl, else any URL ending in `/Patient/1`) or
        conditional (`Organization?identifier=system|value`, or `value` alone). More than
        one only for a conditional reference that matches several. Raises ValueError for a
        conditional reference on a search parameter other than identifier or _id."""
        base, _, query = target.partition("?")
        if query:
            return self._conditional(target, base.rsplit("/", 1)[-1], query, kinds)
        key = self._url_key(target)
        if key is None and (m := TAIL.search(target)):
            key = f"{m[1]}/{m[2]}"
        res = self._resource(key) if key else None
        return [res] if res is not None and res["resourceType"] in kinds else []

    def by_identifier(self, system: str | None, value: str, kinds: Collection[str]
                      ) -> list[dict]:
        """The resources of `kinds` with this identifier (any system when `system` is None)."""
        keys: set[str] = set()
        for kind in kinds:
            keys |= self._keys((kind, system or None, value))
        return self._unique(keys, kinds)

    def member(self, member_id: str) -> tuple[dt.date | None, str] | None:
        """(birth date or None, sex F/M/U) of the Patient with this member id (any
        identifier system, else the id itself): X12 claims without a DMG segment. None
        when no Patient or several answer to it."""
        found = self.by_identifier(None, member_id, ("Patient",)) if member_id else []
        if not found and member_id:
            found = self.find(f"Patient/{member_id}", ("Patient",))
        if len(found) != 1:
            return None
        born, sex = found[0].get("birthDate"), found[0].get("gender")
        day = dt.date.fromisoformat(born) if isinstance(born, str) and ISO_DATE.fullmatch(
            born) else None
        return day, {"female": "F", "male": "M"}.get(sex if isinstance(sex, str) else "", "U")

    def taxonomy(self, npi: str) -> str | None:
        """The NUCC taxonomy code of the provider with this NPI (Practitioner.qualification,
        PractitionerRole.specialty, Organization's NUCC type), first found; None if none."""
        for res in self.by_identifier(NPI, npi, PROVIDERS) if npi else []:
            concepts = [q.get("code") for q in res.get("qualification") or []
                        if isinstance(q, dict)]
            concepts += list(res.get("specialty") or []) + list(res.get("type") or [])
            for concept in concepts:
                for c in (concept or {}).get("coding") or [] if isinstance(concept, dict) \
                        else []:
                    if isinstance(c, dict) and c.get("system") == NUCC and isinstance(
                            c.get("code"), str):
                        return c["code"]
        return None

    def _conditional(self, target: str, kind: str, query: str, kinds: Collection[str]
                     ) -> list[dict]:
        if kind not in kinds:
            return []
        keys: set[str] | None = None
        for name, token in parse_qsl(query, keep_blank_values=True):
            if name == "identifier":
                system, bar, value = token.partition("|")
                if not bar:
                    system, value = "", token
                found = self._keys((kind, system or None, value))
            elif name == "_id":
                found = {f"{kind}/{token}"} if self._resource(f"{kind}/{token}") else set()
            else:
                raise ValueError(f"conditional reference {target!r}: ClaimScope resolves "
                                 f"identifier= and _id=, not {name}=")
            keys = found if keys is None else keys & found
        return self._unique(keys or set(), kinds)

    def _unique(self, keys: set[str], kinds: Collection[str]) -> list[dict]:
        found: dict[str, dict] = {}  # one resource under several keys (a CSV provider) once
        for k in sorted(keys):
            r = self._resource(k)
            if r is not None and r["resourceType"] in kinds:
                found.setdefault(json.dumps(r, sort_keys=True), r)
        return list(found.values())

    # -- storage: memory here, Redis in the workers (stream.references) -----------------

    def _resource(self, key: str) -> dict | None:
        """The resource stored under "Patient/1" (or a fullUrl)."""
        return self._by_key.get(key)

    def _keys(self, ident: tuple[str, str | None, str]) -> set[str]:
        """The keys of the resources with identifier (type, system or None, value)."""
        return self._by_ident.get(ident, set())

    def _url_key(self, url: str) -> str | None:
        """The key of the Bundle entry or resource given under this fullUrl."""
        return self._by_url.get(url)

    def entries(self) -> Iterator[tuple[str, dict, list[tuple[str, str | None, str]]]]:
        """(key, resource, its identifier index entries) of every resource held: what a
        store copies (with `urls`)."""
        for key, res in self._by_key.items():
            yield key, res, self._idents.get(key, [])

    def urls(self) -> dict[str, str]:
        """fullUrl -> key, for the resources given under one."""
        return dict(self._by_url)

    # -- building -----------------------------------------------------------------------

    def add(self, res: dict, full_url: str | None = None) -> str | None:
        """Index one resource (a Patient, Practitioner, …); the reason it cannot be, or None."""
        kind, rid = res.get("resourceType"), res.get("id")
        if kind not in PEOPLE:
            return f"a {kind!r}, not one of {', '.join(PEOPLE)}"
        if not (isinstance(rid, str) and rid) and not full_url:
            return f"a {kind} with no id"
        if not (isinstance(rid, str) and rid):  # a fullUrl `…/Patient/1` still names Patient/1
            m = TAIL.search(str(full_url))
            rid = m[2] if m and m[1] == kind else None
        key = f"{kind}/{rid}" if rid else str(full_url)
        idents = [(i.get("system") if isinstance(i.get("system"), str) else None, i["value"])
                  for i in res.get("identifier") or [] if isinstance(i, dict)
                  and isinstance(i.get("value"), str) and i["value"]] \
            if isinstance(res.get("identifier"), list) else []
        self._index(key, res, [(kind, s, v) for s, v in idents])
        if full_url:
            self._by_url[full_url] = key
        return None

    def _index(self, key: str, res: dict, idents: list[tuple[str, str | None, str]]) -> None:
        for old in self._idents.pop(key, []):  # a resource given again: the later one kept
            self._by_ident.get(old, set()).discard(key)
        self._by_key[key] = res
        entries = [(k, s, v) for k, s, v in idents] + [(k, None, v) for k, s, v in idents if s]
        self._idents[key] = entries
        for entry in entries:
            self._by_ident.setdefault(entry, set()).add(key)

    def read_file(self, path: str | Path) -> int:
        """Add one file's resources or rows; how many. Raises ReferenceDataError for a file
        that is unreadable, empty, neither FHIR JSON, NDJSON nor CSV of the known columns,
        or that holds nothing usable."""
        name = str(path)
        try:
            text = Path(path).read_bytes().decode("utf-8-sig")
        except OSError as e:
            raise ReferenceDataError(f"{name}: cannot read: {e.strerror}") from None
        except UnicodeDecodeError as e:
            raise ReferenceDataError(f"{name}: not UTF-8 (byte {e.start})") from None
        if not text.strip():
            raise ReferenceDataError(f"{name}: empty")
        before, problems = len(self), len(self.problems)
        if text.lstrip()[0] in "{[":
            self._json(name, text)
        else:
            self._csv(name, text)
        added = len(self) - before
        if not added:
            first = f"; {self.problems[problems]}" if len(self.problems) > problems else ""
            raise ReferenceDataError(f"{name}: holds no usable {', '.join(PEOPLE)} "
                                     f"resource nor member/provider row{first}")
        return added

    def _json(self, name: str, text: str) -> None:
        try:
            doc = json.loads(text)
        except ValueError as whole:
            lines = text.splitlines()
            try:
                json.loads(next(x for x in lines if x.strip()))
            except ValueError:
                where = f" at line {whole.lineno} column {whole.colno}" if isinstance(
                    whole, json.JSONDecodeError) else ""
                raise ReferenceDataError(f"{name}: not JSON{where}: a FHIR resource, Bundle, "
                                         "JSON array or NDJSON was expected") from None
            for lineno, line in enumerate(lines, 1):
                if line.strip():
                    try:
                        self._take(json.loads(line), f"{name} line {lineno}")
                    except ValueError as e:
                        self.problems.append(f"{name} line {lineno}: not JSON ({e})")
            return
        if isinstance(doc, list):
            for k, res in enumerate(doc):
                self._take(res, f"{name} [{k}]")
        elif isinstance(doc, dict) and isinstance(doc.get("resourceType"), str):
            self._take(doc, name)
        else:
            raise ReferenceDataError(f"{name}: not a FHIR resource, Bundle or JSON array "
                                     "of resources")

    def _take(self, res: Any, where: str) -> None:
        if not isinstance(res, dict):
            self.problems.append(f"{where}: not a JSON object")
            return
        kind = res.get("resourceType")
        if kind == "Bundle":
            entries = res.get("entry") if isinstance(res.get("entry"), list) else []
            for k, e in enumerate(entries):
                inner = e.get("resource") if isinstance(e, dict) else None
                if isinstance(inner, dict) and inner.get("resourceType") in PEOPLE:
                    url = e.get("fullUrl")
                    if why := self.add(inner, url if isinstance(url, str) else None):
                        self.problems.append(f"{where} entry[{k}]: {why}")
            return
        if not isinstance(kind, str):
            self.problems.append(f"{where}: no resourceType")
        elif kind in PEOPLE and (why := self.add(res)):
            self.problems.append(f"{where}: {why}")

    def _csv(self, name: str, text: str) -> None:
        rows = csv.reader(io.StringIO(text))
        header = [h.strip().lower() for h in next(rows)]
        if all(c in header for c in MEMBER_COLUMNS):
            row_of = self._member
        elif all(c in header for c in PROVIDER_COLUMNS):
            row_of = self._provider
        else:
            raise ReferenceDataError(
                f"{name}: not FHIR JSON, nor CSV with a header of id,birth_date,sex (members) "
                f"or npi,taxonomy (providers): line 1 is {text.splitlines()[0][:80]!r}")
        for lineno, row in enumerate(rows, 2):
            if not any(c.strip() for c in row):
                continue
            why = row_of({h: c.strip() for h, c in zip(header, row, strict=False)})
            if why:
                self.problems.append(f"{name} line {lineno}: {why}")

    def _member(self, row: dict[str, str]) -> str | None:
        mid, born, sex = row.get("id", ""), row.get("birth_date", ""), row.get("sex", "")
        if not mid:
            return "no id"
        try:
            if not ISO_DATE.fullmatch(born):
                raise ValueError
            dt.date.fromisoformat(born)
        except ValueError:
            return f"birth_date {born!r} is not a date (YYYY-MM-DD)"
        if sex.lower() not in SEXES:
            return f"sex {sex!r}: F, M or U"
        res = {"resourceType": "Patient", "identifier": [{"system": MEMBER, "value": mid}],
               "birthDate": born, "gender": SEXES[sex.lower()]}
        self._index(f"Patient/{mid}", res, [("Patient", MEMBER, mid)])
        return None

    def _provider(self, row: dict[str, str]) -> str | None:
        npi, taxonomy = row.get("npi", ""), row.get("taxonomy", "")
        if not npi:
            return "no npi"
        if not taxonomy:
            return f"NPI {npi}: no taxonomy"
        res = {"resourceType": "Practitioner", "identifier": [{"system": NPI, "value": npi}],
               "qualification": [{"code": {"coding": [{"system": NUCC, "code": taxonomy}]}}]}
        for kind in PROVIDERS:  # one provider, whichever type a claim names it by
            self._index(f"{kind}/{npi}", res, [(kind, NPI, npi)])
        return None
