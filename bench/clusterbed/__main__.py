"""`python3 bench/clusterbed ...`: the bed's command line (run from the repository root)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clusterbed.run import main

raise SystemExit(main())
