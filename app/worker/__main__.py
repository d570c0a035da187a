"""`python -m app.worker`: run a training worker until SIGTERM (settings from the environment)."""

import sys

from app.worker.main import main

sys.exit(main())
