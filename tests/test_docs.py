"""Examples in the docs stay valid."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from fleetwarden.protocol.rollouts import StrategySpec

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_the_strategy_example_in_docs_is_valid_and_means_the_defaults_plus_hooks():
    block = re.search(r"```toml\n(.*?)```", (DOCS / "rollouts.md").read_text(), re.DOTALL)
    assert block is not None
    spec = StrategySpec.model_validate(tomllib.loads(block.group(1)))
    assert spec.model_dump(exclude={"hooks"}) == StrategySpec().model_dump(exclude={"hooks"})
    assert spec.to_core().hooks.pre == (("systemctl", "stop", "pos"),)
