"""What is learned from trained runs: anomaly scores (``scoring``), comparisons of backends and
estimators (``compare``) and posterior diagnostics (``diagnostics``).
"""
