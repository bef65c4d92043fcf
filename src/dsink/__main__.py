"""``python -m dsink`` (also what torchrun runs)."""

from .cli import main

raise SystemExit(main())
