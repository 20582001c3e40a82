import sys

from effmetrics.cli import main

sys.exit(main())
