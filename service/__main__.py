"""Service layer (entry): `python -m service [bentoml serve options…]`: serve MFDService from the repository root."""
from __future__ import annotations

import os
import sys
from pathlib import Path


def main() -> None:
    root = Path(__file__).resolve().parent.parent
    os.chdir(root)
    args = ["bentoml", "serve", "service.service:MFDService", *sys.argv[1:]]
    os.execvp(sys.executable, [sys.executable, "-m", "bentoml", *args[1:]])


if __name__ == "__main__":
    main()
