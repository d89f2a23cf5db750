import sys

from pld_optim.cli import main

sys.exit(main())
