"""`python -m infra.seaweed up|down` (the Makefile's `lake-up` / `lake-down`)."""

from infra.seaweed import main

raise SystemExit(main())
