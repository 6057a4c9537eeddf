"""`python -m orchestrator.report REF`: the report of a past sweep, rebuilt from MLflow alone."""

import sys

from orchestrator.report.rebuild import main

sys.exit(main())
