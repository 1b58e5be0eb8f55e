"""Training layer (reference): read and import checkpoints written by the authors' code (HealthML/MFD)."""
