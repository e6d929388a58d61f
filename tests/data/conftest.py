import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # for `data_helpers`


@pytest.fixture(scope="session")
def processors(tiny_model_dirs):
    """Processors of saved tiny models: `processors("interleave")` (32 visual tokens per image at
    56 px) or `processors("none")` (16), loaded with `from_pretrained` as in training."""
    from mof_llava import MofLlavaProcessor

    cache = {}

    def get(mixer: str = "interleave"):
        if mixer not in cache:
            cache[mixer] = MofLlavaProcessor.from_pretrained(tiny_model_dirs(mixer))
        return cache[mixer]

    return get


@pytest.fixture
def processor(processors):
    """The interleave processor: 32 placeholders per image."""
    return processors("interleave")


@pytest.fixture
def cache_dir(tmp_path):
    return tmp_path / "cache"
