"""Attention heat maps for one stored claim: re-runs the model on the claim the store kept.

The Score in Redis holds only the top pairs; the full (layers x heads x T x T) weights are
recomputed here on demand, with the console's own checkpoint (`settings.checkpoint`). When
the worker that scored the claim ran another model version, the maps are of the console's
version and the page says so. Cost: the first call loads the checkpoint (~1-3 s, torch
import included); each claim then costs one forward pass of one sequence (~ms on CPU).
"""

from __future__ import annotations

import threading

import numpy as np

from model.claims import Claim
from stream.settings import Settings


class Attention:
    """Lazily loaded Scorer; `of(claim_dict)` returns the heat-map JSON for the page."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._scorer = None
        self._lock = threading.Lock()

    def scorer(self):
        with self._lock:
            if self._scorer is None:
                # torch (~1 s, ~200 MB) only once someone opens a heat map
                from model.scorer import Scorer

                self._scorer = Scorer.load(self.settings.checkpoint, device="cpu",
                                           precision="fp32")
            return self._scorer

    def of(self, claim: dict) -> dict:
        """{model_version, tokens: [{label, field, surprise}], layers[l][h][q][k]}.

        `surprise` is the anomaly head's probability that the token was replaced (0-1);
        weights are rounded to 3 decimals (rows sum to 1). Raises pydantic's
        ValidationError when the stored claim no longer validates.
        """
        scorer = self.scorer()
        c = Claim.model_validate(claim)
        _, enc, raw = scorer.inspect(c)
        n = int(enc.lengths[0])
        p_odd = raw.replaced_probability[0][:n]
        tokens = [{"label": t.label, "field": t.field, "surprise": round(float(p), 3)}
                  for t, p in zip(enc.tokens[0][:n], p_odd, strict=True)]
        layers = [np.round(a[0, :, :n, :n].float().cpu().numpy(), 3).tolist()
                  for a in raw.attentions]  # per layer: (heads, T, T)
        return {"model_version": scorer.model_version, "tokens": tokens, "layers": layers,
                "truncated": bool(enc.truncated[0])}
