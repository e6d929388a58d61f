import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # for `toydata`

from toydata import write_dataset  # noqa: E402


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("toy_data"))
