"""`python -m orchestrator.report REF`: the report of a past sweep, rebuilt from MLflow alone."""

import sys

from orchestrator.report.tradeoff import main

sys.exit(main())
