"""Head specialisation, measured: what each attention head looks at, by field type.

For a fixed probe set of claims, each head gets a field x field matrix: row `q`, column
`k` = the attention a token of field `q` pays to all tokens of field `k`, averaged over
the probe's tokens of field `q` (each row sums to 1). Two numbers summarise a head:

- `entropy`: mean row entropy in nats (low = the head attends narrowly);
- `specialisation`: Jensen-Shannon divergence (nats) of the head's matrix from the mean
  matrix of its layer's heads, rows weighted by how often each field occurs. 0 means the
  head does what the others do; ln 2 ~ 0.69 is the maximum.

Training (`model.training`) takes these snapshots into the checkpoint's metrics, with the
probe's validation AUROC; `claimscope report` (`model.quality.report`) plots them: the
seed's claim that heads become "medical", "dosage" and "cost" experts is read off these
matrices, not asserted.
"""

from __future__ import annotations

import numpy as np
import torch

from model.dataset import ClaimSet
from model.metrics import auroc
from model.tokenizer import FIELDS

SHOWN = FIELDS[1:]  # every field type but padding


def _js(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Row-wise Jensen-Shannon divergence of distributions p, q: (..., F)."""
    m = 0.5 * (p + q)

    def kl(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.where(a > 0, a * np.log(np.maximum(a, 1e-12) / np.maximum(b, 1e-12)), 0).sum(-1)

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


@torch.inference_mode()
def head_snapshot(model, probe: ClaimSet, step: int) -> dict:
    """Validation AUROC on the probe and per-head field matrices at this training step."""
    was_training = model.training
    model.eval()
    v, f = probe.batch(np.arange(len(probe)), next(model.parameters()).device)
    fraud, _, atts = model(v, f)
    model.train(was_training)
    f, fraud, atts = f.cpu(), fraud.float().cpu(), [a.float().cpu() for a in atts]
    onehot = torch.nn.functional.one_hot(f, len(FIELDS)).float()[..., 1:]  # (B, T, F)
    count = onehot.sum(dim=(0, 1))  # tokens per field
    heads = []
    for layer, a in enumerate(atts):  # (B, nh, T, T)
        to_field = a @ onehot[:, None]  # (B, nh, T, F): attention from each token per key field
        mats = torch.einsum("btq,bhtk->hqk", onehot, to_field) / count.clamp(min=1)[None, :, None]
        mats = mats.numpy()  # (nh, F, F)
        weights = (count / count.sum()).numpy()
        mean = mats.mean(axis=0)
        for h, m in enumerate(mats):
            rows = count.numpy() > 0
            ent = -(np.where(m > 0, m * np.log(np.maximum(m, 1e-12)), 0)).sum(-1)
            heads.append({
                "layer": layer, "head": h,
                "matrix": np.round(m, 4).tolist(),
                "entropy": round(float((ent * weights)[rows].sum()), 4),
                "specialisation": round(float((_js(m, mean) * weights)[rows].sum()), 4),
            })
    labels = probe.labels
    val = auroc(labels, fraud.numpy()) if 0 < labels.sum() < len(labels) else None
    return {"step": step, "auroc": val, "fields": list(SHOWN), "heads": heads}
