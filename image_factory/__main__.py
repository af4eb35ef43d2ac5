"""``python -m image_factory`` is the ``image-factory`` console script."""

import sys

from image_factory.cli import main

sys.exit(main())
