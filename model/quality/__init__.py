"""Measuring the model: `claimscope eval` (the yardstick), its baselines and artefact probe,
head specialisation, hyper-parameter sweeps and training reports. Scoring never imports it.
"""
