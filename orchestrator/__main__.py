"""Command-line entry: `python -m orchestrator +recipe=NAME [overrides]` (Hydra composes conf/ + recipes/)."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from orchestrator.config import broken_recipe, register, to_dict

register()


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Validate, plan, execute and report one sweep; exit 2 on bad input, 1 if any node failed."""
    from hydra.core.hydra_config import HydraConfig

    from orchestrator.sweep import run_sweep

    hydra_cfg = HydraConfig.get()
    recipe = hydra_cfg.runtime.choices.get("recipe")
    overrides = list(hydra_cfg.overrides.task)
    code = run_sweep(to_dict(cfg), recipe, overrides)
    if code:
        sys.exit(code)


if __name__ == "__main__":
    problem = broken_recipe(sys.argv[1:])
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    main()
