"""Public CMS tables, vendored: NCCI edits, MUEs, add-on codes, the Physician Fee Schedule,
HCPCS Level II descriptions, and the Medicare Code Editor's age and sex edits.

`tables` loads the files under `model/vocab/cms/`; `qs` reads the R `qs` files they were
extracted from (only `scripts/build_cms_tables.py` needs it).
"""
