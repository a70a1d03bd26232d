import sys

from rsc.cli import main

sys.exit(main())
