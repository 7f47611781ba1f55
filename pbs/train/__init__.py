"""Training utilities (proxy long-context model: pbs.train.proxy)."""
