"""What the worker's Redis scripts share: batches travel as a few joined strings.

A batch of 1,000 claims passed one value per ARGV is 6,000-8,000 arguments that redis-py
encodes one by one in Python (the worker's and the scoring processes' busiest Python after
Faust and the model); joined, it is a handful. IDs, codes, dates and numbers cannot contain
a newline (the claim contract's charsets), so a newline separates them; records, which can,
travel as one blob plus their lengths.
"""

from __future__ import annotations

from collections.abc import Iterable

# split(s): the newline-separated parts of s, as a Lua list
SPLIT = """
local function split(s)
  local out = {}
  for part in string.gmatch(s, '[^\\n]+') do out[#out + 1] = part end
  return out
end
"""


def joined(values: Iterable[object]) -> str:
    """The values newline-joined, for `split` in a script."""
    return "\n".join(map(str, values))
