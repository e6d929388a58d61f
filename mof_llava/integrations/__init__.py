"""mof-llava models inside other evaluation harnesses (lmms-eval); optional, each needs its extra."""
