import sys

from fossamon.cli import main

sys.exit(main())
