"""Training layer (data): genomes, peaks, label and data stores, track tables, splits, loaders."""
