"""`python -m fossamon.demo`: serve the stand-in FossaWork target (see fossamon.demo.target)."""

import sys

from fossamon.demo.target import main

sys.exit(main())
