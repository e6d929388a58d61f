import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # for `pixels`


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory):
    """A small synthetic dataset, written once per session."""
    from mof_llava.demo.synthetic import DatasetSizes, write_dataset

    sizes = DatasetSizes(pretrain=48, instruct=48, mmvp_pairs=8)
    return write_dataset(tmp_path_factory.mktemp("demo_data"), seed=7, sizes=sizes), sizes
