"""``python -m medreason_utils.pipeline``: run the notebooks (01-05) headless (see :mod:`.run`)."""

from .run import main

raise SystemExit(main())
