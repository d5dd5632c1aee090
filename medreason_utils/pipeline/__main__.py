"""``python -m medreason_utils.pipeline``: run the four notebooks headless (see :mod:`.run`)."""

from .run import main

raise SystemExit(main())
