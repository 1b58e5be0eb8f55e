"""Training layer (commands): train, evaluate and export MFD models; the package holds one module per command.

Commands (`python -m training.<command>`): `train`, `evaluate`, `export`, `import_reference`, `build_store`,
`demo_data`, `triton_config`. Each is a thin CLI over a library in a layer folder:

- `data/`: genomes, peaks, label stores, data stores, track tables, splits, loaders, the demo genome;
- `model/`: the network, the penalty, the config, checkpoints, predictions and the fitting loop;
- `evaluation/`: metrics, independence probes, the demo claims and the paper's analyses;
- `reference/`: reading and importing checkpoints written by the authors' code;
- `repository/` (export): TorchScript and Triton configs of the model repository the service serves.

What training and serving share is in `mfd_common` (docs/contract.md).
"""
