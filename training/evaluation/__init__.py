"""Training layer (evaluation): metrics, independence probes, the demo claims and the paper's analyses."""
