"""Public CMS tables, vendored: NCCI edits, MUEs, add-on codes, the Physician Fee Schedule,
HCPCS Level II descriptions, and the Medicare Code Editor's age and sex edits.

`tables` loads the files under `model/vocab/cms/`. `ncci` reads CMS's own quarterly edit
files, and `northstar` with `qs` reads the R `qs` files the vendored tables were extracted
from; `build` writes the tables for both (`claimscope edits update`,
`scripts/build_cms_tables.py`).
"""
