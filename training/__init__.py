"""Training side of mfd-serve: dataset build, MFD model, independence penalty, train loop, evaluation, export."""
