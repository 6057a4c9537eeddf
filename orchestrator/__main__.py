"""Command-line entry: `python -m orchestrator +recipe=NAME [overrides]` (Hydra composes conf/ + recipes/)."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from orchestrator.config import register

register()


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Validate, plan, execute and report one sweep; exit 2 on bad input, 1 if any node failed."""
    from hydra.core.hydra_config import HydraConfig

    from orchestrator.sweep import run_sweep

    recipe = HydraConfig.get().runtime.choices.get("recipe")
    code = run_sweep(cfg, recipe, OmegaConf.to_yaml(cfg, resolve=True))
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
