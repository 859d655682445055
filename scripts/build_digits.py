#!/usr/bin/env python
"""Build the digits tasks in TTRV format (thin wrapper of ``python -m verl.data.digits``).

Example: ``python scripts/build_digits.py --out data/digits --seed 0``
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from verl.data.digits import main  # noqa: E402

if __name__ == "__main__":
    main()
