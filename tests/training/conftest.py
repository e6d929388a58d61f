import importlib.util
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # for `toydata`

from toydata import write_dataset  # noqa: E402


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("toy_data"))


@pytest.fixture(scope="module")
def bench():
    """scripts/bench_train.py as a module (scripts/ is not a package)."""
    script = Path(__file__).resolve().parents[2] / "scripts" / "bench_train.py"
    spec = importlib.util.spec_from_file_location("bench_train", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
