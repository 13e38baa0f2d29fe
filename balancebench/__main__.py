import sys

from balancebench.cli import main

sys.exit(main())
