"""Two faults of lmms-eval 0.7.3 that stop every evaluation with our model, mended where they arise.

1. filelock 4. `simple_evaluate` patches filelock's lock metaclass (so that nested `load_dataset` calls share one
lock per file) through `filelock._api`, filelock 3's module; filelock 4 (constraints.txt pins 4.3.1)
moved those classes to `filelock._core`, and every evaluation then stops with `No module named
'filelock._api'`. The old name is pointed at the same classes, so lmms-eval's patch applies as meant.

2. Log-likelihoods. The evaluator passes every model output through `unwrap_generation_output`, which
keeps strings and turns anything else into its `str()`: the `(log-probability, is_greedy)` pairs
`loglikelihood` returns become the text "(-6.2, False)" and every multiple-choice task fails in
`process_results` ("too many values to unpack"). A pair of a number and a bool is passed through as is;
everything else goes to lmms-eval's own function.
"""

from __future__ import annotations

import importlib.util
import sys
import types


def alias_filelock_api() -> None:
    """Make `import filelock._api` give filelock 4's BaseFileLock and FileLockMeta (no-op on filelock 3)."""
    if "filelock._api" in sys.modules or importlib.util.find_spec("filelock._api") is not None:
        return
    from filelock._core._lock import BaseFileLock
    from filelock._core._singleton import FileLockMeta

    module = types.ModuleType(
        "filelock._api", "filelock 3's name for filelock._core (see mof_llava.integrations.lmms_compat)"
    )
    module.BaseFileLock = BaseFileLock
    module.FileLockMeta = FileLockMeta
    sys.modules["filelock._api"] = module


def keep_loglikelihood_pairs() -> None:
    """Let the evaluator keep `loglikelihood`'s (float, bool) pairs instead of their str()."""
    from lmms_eval import evaluator

    unwrap = evaluator.unwrap_generation_output
    if getattr(unwrap, "keeps_pairs", False):
        return

    def unwrap_keeping_pairs(output):
        if isinstance(output, tuple) and len(output) == 2 and isinstance(output[1], bool):
            if isinstance(output[0], int | float):
                return output, None
        return unwrap(output)

    unwrap_keeping_pairs.keeps_pairs = True
    evaluator.unwrap_generation_output = unwrap_keeping_pairs
