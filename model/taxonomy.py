"""NUCC Health Care Provider Taxonomy codes -> the specialties the model reads.

Why: claims name the provider's specialty by one of NUCC's ~880 taxonomy codes
(`207RC0000X`, `261QR0405X`), while the model knows the 27 specialties of
`model/vocab/specialties.json`. The code set is vendored whole (`vocab/nucc_taxonomy.csv`,
NUCC version 25.1; model/vocab/SOURCES.md, "Provider taxonomy"), and a code's specialty is
read from its three levels by the rules below, not listed code by code.

The rule, in order (`specialty_of_row`):

1. `EXCEPTIONS`: the few codes the rules would place wrongly, each with its reason.
2. `SPECIALIZATION`, only for physicians, advanced practice providers (NPs, CNSs, PAs) and
   clinics: a specialization that names a field we score moves the code there, whatever
   its classification (Internal Medicine / Cardiovascular Disease -> cardiology, Pediatrics
   / Pediatric Cardiology -> cardiology, Clinic/Center / Endoscopy -> gastroenterology).
   A specialization listed with None (Pain Medicine) is unknown whatever its classification.
3. `CLASSIFICATION`: Family Medicine -> family_medicine, Optometrist -> ophthalmology, ...
4. `GROUPING`: what is left of a grouping whose members all bill alike (Behavioral Health
   & Social Service Providers -> psychiatry, Pharmacy Service Providers -> pharmacy).
5. Otherwise None: no specialty of ours fits, and the specialty is unknown.

What "fits" means: a code maps to a specialty when its providers bill mostly what that
specialty's procedure list holds. A near miss is left unknown on purpose: the model reads
a specialty against the procedures billed, so a wrong specialty makes ordinary claims look
mismatched (a false alarm), while an unknown one only withholds a clue. So anesthesiology,
chiropractic, dentistry, podiatry, dietitians, speech therapy, hospitals and other
facilities whose claims are institutional, transport, home care, generic physician
assistants, technicians who do not bill on their own and groups whose specialty the code
does not say (Multi-Specialty) are unknown. Counts per specialty: docs/formats.md.

Writers need the reverse, one code per specialty: `CANONICAL`, whose 27 codes all read back
as the specialty they were written for.

Cost: the first call reads the 883-row table (about a millisecond); it is cached for the
process.
"""

from __future__ import annotations

import csv
from functools import cache
from pathlib import Path
from typing import NamedTuple

__all__ = [
    "CANONICAL",
    "NUCC_VERSION",
    "TABLE",
    "Taxonomy",
    "code_of",
    "describe",
    "lookup",
    "specialty",
    "specialty_of_row",
    "table",
]

TABLE = Path(__file__).resolve().parent / "vocab" / "nucc_taxonomy.csv"
NUCC_VERSION = "25.1"  # effective 2025-07-01; model/vocab/SOURCES.md

# The code the FHIR and X12 writers give each specialty, one each.
CANONICAL: dict[str, str] = {
    "family_medicine": "207Q00000X",
    "internal_medicine": "207R00000X",
    "pediatrics": "208000000X",
    "endocrinology": "207RE0101X",
    "cardiology": "207RC0000X",
    "pulmonology": "207RP1001X",
    "orthopedics": "207X00000X",
    "psychiatry": "2084P0800X",
    "neurology": "2084N0400X",
    "nephrology": "207RN0300X",
    "urology": "208800000X",
    "obstetrics_gynecology": "207V00000X",
    "gastroenterology": "207RG0100X",
    "dermatology": "207N00000X",
    "oncology": "207RX0202X",
    "infectious_disease": "207RI0200X",
    "emergency_medicine": "207P00000X",
    "radiology": "2085R0202X",
    "ophthalmology": "207W00000X",
    "otolaryngology": "207Y00000X",
    "rheumatology": "207RR0500X",
    "physical_therapy": "225100000X",
    "general_surgery": "208600000X",
    "laboratory": "291U00000X",
    "pathology": "207ZP0102X",
    "pharmacy": "333600000X",
    "dme_supplier": "332B00000X",
}

PHYSICIANS = "Allopathic & Osteopathic Physicians"
ADVANCED_PRACTICE = "Physician Assistants & Advanced Practice Nursing Providers"
CLINICS = "Ambulatory Health Care Facilities"

# 1. Codes the rules below would place wrongly.
EXCEPTIONS: dict[str, str | None] = {
    "207ZH0000X": "pathology",        # Pathology / Hematology is hematopathology, not oncology
    "207QH0002X": "family_medicine",  # hospice and palliative care by a family physician
    "2080H0002X": "pediatrics",       # ... and by a pediatrician: children
    "363LC0200X": "internal_medicine",  # critical care NP: hospital medicine, not primary care
    "364SR0400X": None,               # rehabilitation nurse specialist, not a therapist
}

# 2. Specializations that say the field, for PHYSICIANS, ADVANCED_PRACTICE and CLINICS.
_FIELDS: dict[str | None, tuple[str, ...]] = {
    "cardiology": (
        "Cardiovascular Disease", "Adult Congenital Heart Disease",
        "Advanced Heart Failure and Transplant Cardiology", "Clinical Cardiac Electrophysiology",
        "Interventional Cardiology", "Nuclear Cardiology", "Pediatric Cardiology"),
    "endocrinology": (
        "Endocrinology, Diabetes & Metabolism", "Pediatric Endocrinology", "Diabetology"),
    "gastroenterology": (
        "Gastroenterology", "Hepatology", "Transplant Hepatology", "Pediatric Gastroenterology",
        "Pediatric Transplant Hepatology", "Endoscopy"),
    "oncology": (  # medical and radiation oncology: our list holds chemotherapy and 77xxx
        "Hematology", "Hematology & Oncology", "Medical Oncology",
        "Pediatric Hematology-Oncology", "Radiation Oncology", "Therapeutic Radiology",
        "Oncology", "Oncology, Pediatrics", "Oncology, Radiation"),
    "infectious_disease": ("Infectious Disease", "Pediatric Infectious Diseases"),
    "nephrology": (
        "Nephrology", "Pediatric Nephrology", "End-Stage Renal Disease (ESRD) Treatment"),
    "pulmonology": (  # "pulmonary disease and sleep medicine": polysomnography is ours
        "Pulmonary Disease", "Pediatric Pulmonology", "Sleep Medicine",
        "Sleep Disorder Diagnostic"),
    "rheumatology": ("Rheumatology", "Pediatric Rheumatology"),
    "otolaryngology": (  # allergy testing and immunotherapy (95004, 95117, 95165)
        "Allergy & Immunology", "Pediatric Allergy/Immunology"),
    "psychiatry": (
        "Psychiatry", "Addiction Psychiatry", "Addiction Medicine",
        "Child & Adolescent Psychiatry", "Forensic Psychiatry", "Geriatric Psychiatry",
        "Psychosomatic Medicine", "Psychiatric/Mental Health",
        "Psychiatric/Mental Health, Adult", "Psychiatric/Mental Health, Child & Adolescent",
        "Psychiatric/Mental Health, Child & Family",
        "Psychiatric/Mental Health, Chronically Ill", "Psychiatric/Mental Health, Community",
        "Psychiatric/Mental Health, Geropsychiatric", "Adolescent and Children Mental Health",
        "Adult Mental Health", "Mental Health (Including Community Mental Health Center)",
        "Methadone", "Rehabilitation, Substance Use Disorder"),
    "neurology": (
        "Neurology", "Neurology with Special Qualifications in Child Neurology",
        "Clinical Neurophysiology", "Epilepsy", "Neurocritical Care", "Neuromuscular Medicine",
        "Vascular Neurology", "Brain Injury Medicine", "Behavioral Neurology & Neuropsychiatry",
        "Neurodevelopmental Disabilities", "Neuroscience"),
    "radiology": (
        "Diagnostic Neuroimaging", "Magnetic Resonance Imaging (MRI)", "Radiology",
        "Radiology, Mammography", "Radiology, Mobile", "Radiology, Mobile Mammography"),
    "orthopedics": (  # joint injections, casting, x-rays; hand surgery is carpal tunnel
        "Sports Medicine", "Surgery of the Hand", "Hand Surgery"),
    "pathology": ("Dermatopathology", "Molecular Genetic Pathology"),
    "emergency_medicine": (
        "Pediatric Emergency Medicine", "Medical Toxicology", "Emergency", "Emergency Care"),
    "internal_medicine": (  # office and hospital E/M of adults, advance care planning
        "Hospice and Palliative Medicine", "Adult Health", "Gerontology", "Acute Care"),
    "family_medicine": (  # primary care of all ages, urgent care (POS 20 is in its list)
        "Family", "Family Health", "Primary Care", "Community Health",
        "Community Health/Public Health", "Occupational Health", "Occupational Medicine",
        "Federally Qualified Health Center (FQHC)", "Rural Health", "Migrant Health",
        "Student Health", "Urgent Care", "Corporate Health", "Prison Health",
        "Public Health, Federal", "Public Health, State or Local"),
    "pediatrics": (
        "Pediatrics", "Neonatal", "Neonatal, Critical Care", "Pediatrics, Critical Care",
        "School"),
    "obstetrics_gynecology": (
        "Obstetrics & Gynecology", "Women's Health", "Perinatal",
        "Ambulatory Family Planning Facility", "Ambulatory Fertility Facility", "Birthing",
        "Family Planning, Non-Surgical"),
    "urology": ("Lithotripsy",),
    "ophthalmology": ("Ophthalmologic Surgery",),
    "physical_therapy": (
        "Physical Therapy", "Rehabilitation",
        "Rehabilitation, Comprehensive Outpatient Rehabilitation Facility (CORF)"),
    "general_surgery": ("Surgical",),  # physician assistant, surgical
    None: (  # nothing of ours bills like these, whatever the classification
        "Pain Medicine", "Interventional Pain Medicine", "Undersea and Hyperbaric Medicine",
        "Clinical Informatics"),
}
SPECIALIZATION: dict[str, str | None] = {
    spec: field for field, specs in _FIELDS.items() for spec in specs}
SPECIALIZATION_GROUPINGS = frozenset({PHYSICIANS, ADVANCED_PRACTICE, CLINICS})

# 3. Classifications. Those not listed fall to their grouping (4), else are unknown.
CLASSIFICATION: dict[str, str | None] = {
    # physicians
    "Allergy & Immunology": "otolaryngology",  # see SPECIALIZATION
    "Colon & Rectal Surgery": "general_surgery",  # colonoscopy, hemorrhoids (45378, 46221)
    "Dermatology": "dermatology",
    "Electrodiagnostic Medicine": "neurology",  # EMG and nerve conduction (95886, 95910)
    "Emergency Medicine": "emergency_medicine",
    "Family Medicine": "family_medicine",
    "General Practice": "family_medicine",
    "Hospitalist": "internal_medicine",
    "Internal Medicine": "internal_medicine",
    "Neuromusculoskeletal Medicine, Sports Medicine": "orthopedics",
    "Nuclear Medicine": "radiology",
    "Obstetrics & Gynecology": "obstetrics_gynecology",
    "Ophthalmology": "ophthalmology",
    "Orthopaedic Surgery": "orthopedics",
    "Otolaryngology": "otolaryngology",
    "Pathology": "pathology",
    "Pediatrics": "pediatrics",
    "Plastic Surgery": "general_surgery",  # excisions, repairs, breast surgery
    "Preventive Medicine": "family_medicine",  # occupational and public health
    "Radiology": "radiology",
    "Surgery": "general_surgery",
    "Transplant Surgery": "general_surgery",  # dialysis access (36821) is ours
    "Urology": "urology",
    # advanced practice: a nurse practitioner without a specialization is most often a
    # family NP; a physician assistant or nurse specialist may work in any field (unknown)
    "Nurse Practitioner": "family_medicine",
    "Advanced Practice Midwife": "obstetrics_gynecology",
    # other individuals
    "Optometrist": "ophthalmology",  # eye exams (92002-92015)
    "Audiologist": "otolaryngology",  # audiometry, tympanometry (92557, 92567)
    "Audiologist-Hearing Aid Fitter": "otolaryngology",
    "Physical Therapist": "physical_therapy",
    "Physical Therapy Assistant": "physical_therapy",
    "Occupational Therapist": "physical_therapy",  # therapeutic exercise and activities
    "Occupational Therapy Assistant": "physical_therapy",
    "Kinesiotherapist": "physical_therapy",
    "Orthotist": "dme_supplier",  # orthoses and prostheses (L codes)
    "Prosthetist": "dme_supplier",
    "Orthotic Fitter": "dme_supplier",
    "Pedorthist": "dme_supplier",
    "Mastectomy Fitter": "dme_supplier",
    "Midwife": "obstetrics_gynecology",
    "Midwife, Lay": "obstetrics_gynecology",
    "Assistant Behavior Analyst": None,  # applied behaviour analysis (97151-97158)
    "Behavior Analyst": None,
    "Behavior Technician": None,
    # organisations
    "Community/Behavioral Health": "psychiatry",  # psychotherapy and H codes
    "Clinical Medical Laboratory": "laboratory",
    "Military Clinical Medical Laboratory": "laboratory",
    "Pharmacy": "pharmacy",
    "Department of Veterans Affairs (VA) Pharmacy": "pharmacy",
    "Indian Health Service/Tribal/Urban Indian Health (I/T/U) Pharmacy": "pharmacy",
    "Military/U.S. Coast Guard Pharmacy": "pharmacy",
    "Non-Pharmacy Dispensing Site": "pharmacy",
    "Durable Medical Equipment & Medical Supplies": "dme_supplier",
    "Prosthetic/Orthotic Supplier": "dme_supplier",
    "Hearing Aid Equipment": "dme_supplier",
    "Medical Foods Supplier": "dme_supplier",  # enteral nutrition is billed as supplies
    "Portable X-ray and/or Other Portable Diagnostic Imaging Supplier": "radiology",
}

# 4. Groupings whose members bill alike.
GROUPING: dict[str, str] = {
    "Behavioral Health & Social Service Providers": "psychiatry",  # 90791, 90832-90853
    "Pharmacy Service Providers": "pharmacy",
}


class Taxonomy(NamedTuple):
    """One NUCC code and its three levels (specialization empty for a classification's
    own code)."""

    code: str
    grouping: str
    classification: str
    specialization: str


def specialty_of_row(code: str, grouping: str, classification: str,
                     specialization: str) -> str | None:
    """The specialty of one code from its levels, by the rules above; None = unknown."""
    if code in EXCEPTIONS:
        return EXCEPTIONS[code]
    if grouping in SPECIALIZATION_GROUPINGS and specialization in SPECIALIZATION:
        return SPECIALIZATION[specialization]
    if classification in CLASSIFICATION:
        return CLASSIFICATION[classification]
    return GROUPING.get(grouping)


@cache
def table() -> dict[str, tuple[Taxonomy, str | None]]:
    """Every NUCC code -> (its levels, its specialty or None), read once."""
    with TABLE.open(encoding="utf-8", newline="") as f:
        rows = [Taxonomy(**r) for r in csv.DictReader(f)]
    return {r.code: (r, specialty_of_row(*r)) for r in rows}


def _key(code: str) -> str:
    return code.strip().upper()


def lookup(code: str) -> Taxonomy | None:
    """The NUCC levels of a code (any case, spaces ignored); None if NUCC has no such code."""
    hit = table().get(_key(code))
    return hit[0] if hit else None


def specialty(code: str) -> str | None:
    """The specialty a taxonomy code reads as; None when NUCC has no such code or it has no
    fitting specialty (`lookup` tells the two apart).

    >>> specialty("207RC0000X"), specialty("2080P0202X"), specialty("207L00000X")
    ('cardiology', 'cardiology', None)
    """
    hit = table().get(_key(code))
    return hit[1] if hit else None


def describe(code: str) -> str:
    """A code's levels for a message: "Allopathic & Osteopathic Physicians / Anesthesiology"."""
    t = lookup(code)
    if t is None:
        return "not a NUCC code"
    return " / ".join(x for x in (t.grouping, t.classification, t.specialization) if x)


def code_of(specialty_name: str) -> str:
    """The code the writers give a specialty; ValueError for one without a code."""
    try:
        return CANONICAL[specialty_name]
    except KeyError:
        raise ValueError(f"provider_specialty {specialty_name!r} has no NUCC taxonomy code "
                         "in model/taxonomy.py") from None
