"""mof-llava: LLaVA-1.5 with a mixture of vision features (CLIP + DINOv2), additive or interleaved."""

__version__ = "0.1.0"
