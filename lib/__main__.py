import os
import sys

# Idle OpenMP threads sleep instead of spinning: with spinning, a busy machine (another job on
# one of two cores) made 2-thread training ~10x slower than 1 thread. Must precede `import torch`.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from lib.cli import main  # noqa: E402

sys.exit(main())
