"""`claimscope report`: training curves and head-specialisation heat maps as JSON + PNG."""

from __future__ import annotations

import json
from pathlib import Path

from model.checkpoint import load_checkpoint


def write_report(checkpoint: str, out: Path) -> list[Path]:
    """Write report.json, metric_curve.png and one heat map per head per snapshot."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    ck = load_checkpoint(checkpoint)
    snaps = ck.metrics.get("snapshots", [])
    if not snaps:
        raise ValueError(f"{checkpoint} has no training snapshots to report")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    summary = {
        "model_version": ck.model_version,
        "validation": ck.metrics.get("validation", []),
        "snapshots": [{"step": s["step"], "auroc": s["auroc"],
                       "heads": [{k: h[k] for k in ("layer", "head", "entropy",
                                                    "specialisation")} for h in s["heads"]]}
                      for s in snaps],
    }
    (out / "report.json").write_text(json.dumps(summary, indent=2))
    written.append(out / "report.json")

    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    steps = [max(s["step"], 1) for s in snaps]
    ax[0].plot(steps, [s["auroc"] for s in snaps], marker="o")
    ax[0].set(xscale="log", xlabel="training step", ylabel="validation AUROC",
              title="fraud head AUROC (probe set)")
    for layer in sorted({h["layer"] for h in snaps[0]["heads"]}):
        for head in sorted({h["head"] for h in snaps[0]["heads"]}):
            ys = [next(h["specialisation"] for h in s["heads"]
                       if h["layer"] == layer and h["head"] == head) for s in snaps]
            ax[1].plot(steps, ys, marker=".", label=f"L{layer}H{head}")
    ax[1].set(xscale="log", xlabel="training step", ylabel="JS divergence from layer mean (nats)",
              title="head specialisation")
    ax[1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "metric_curve.png", dpi=110)
    plt.close(fig)
    written.append(out / "metric_curve.png")

    fields = snaps[0]["fields"]
    for s in snaps:
        for h in s["heads"]:
            fig, ax = plt.subplots(figsize=(6.2, 5.4))
            im = ax.imshow(h["matrix"], cmap="viridis", vmin=0, vmax=1)
            ax.set_xticks(range(len(fields)), fields, rotation=70, fontsize=7)
            ax.set_yticks(range(len(fields)), fields, fontsize=7)
            ax.set(xlabel="attended field (key)", ylabel="attending field (query)",
                   title=f"step {s['step']} layer {h['layer']} head {h['head']} "
                         f"(spec. {h['specialisation']:.3f})")
            fig.colorbar(im, ax=ax, fraction=0.046)
            fig.tight_layout()
            path = out / f"heads_step{s['step']:05d}_L{h['layer']}H{h['head']}.png"
            fig.savefig(path, dpi=90)
            plt.close(fig)
            written.append(path)
    return written
