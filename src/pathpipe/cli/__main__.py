"""``python -m pathpipe.cli``: the same as the ``pathpipe`` command."""

from pathpipe.cli import main

raise SystemExit(main())
