"""The entry point lmms-eval reads (group `lmms_eval.models`, declared in pyproject.toml).

lmms-eval loads every entry point of the group each time `lmms_eval.models` is imported, so this module
stays light: the model class (lmms_model.py, which needs torch and the model code) is named by its path
and imported only when `--model mof_llava` is asked for.
"""

from __future__ import annotations

MODEL_ID = "mof_llava"
MODEL_CLASS = "mof_llava.integrations.lmms_model.MofLlava"


def manifest():
    """lmms-eval's registration record for `--model mof_llava` (a "simple" model: it gets the task's
    prompt text and builds the conversation itself)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=MODEL_CLASS)
