"""Training layer (model): the MFD network, its penalty and config, checkpoints, predictions and the fitting loop."""
