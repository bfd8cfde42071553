"""Measuring the model: `claimscope eval` (the yardstick), its baselines, the probes for
give-aways, the everyday-care suite, head specialisation, hyper-parameter sweeps and
training reports. Scoring never imports it.
"""
