import sys

from hat.cli import main

sys.exit(main())
