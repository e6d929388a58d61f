"""Values shared by the processor, the data pipeline and the model."""

# Label value ignored by the loss (PyTorch's cross-entropy default).
IGNORE_INDEX = -100

# The marker users write in prompts and LLaVA's data files. The processor expands each one into
# as many placeholder ids as the mixer produces visual tokens.
IMAGE_TOKEN = "<image>"

# LLaVA's own placeholder id: outside every vocabulary, so a Vicuna vocabulary stays unchanged.
LLAVA_IMAGE_TOKEN_INDEX = -200

# LION's tag soft prompt (mof_llava/tags/prompt.py): the marker the tag template writes where the
# learnable hint vector goes, and its placeholder id, like the image's outside every vocabulary.
TAG_HINT_TOKEN = "<tag_hint>"
TAG_HINT_TOKEN_INDEX = -201
