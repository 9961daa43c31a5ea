"""The model files' composed configs."""

from __future__ import annotations


def size_class(*overrides: str) -> str:
    """The size class the composed config chose (a Hydra choice, not a config value)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from tests.conftest import CONF

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose("config", list(overrides), return_hydra_config=True).hydra.runtime.choices.size
