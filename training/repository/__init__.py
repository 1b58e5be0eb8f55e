"""Training layer (export): the Triton model repository the service serves: TorchScript models and their configs."""
