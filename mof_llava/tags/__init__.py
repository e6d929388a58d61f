"""Image tags for LION's tag prompt: taggers behind one interface (taggers.py) and `tag(TagJob)`,
which fills a data file's `tags` (job.py; the command is `mof-llava tags`)."""

from .job import TagJob, TagResult, tag
from .taggers import ImageRef, ImageTagger, NullTagger, PrecomputedTagger, TaggerError

__all__ = [
    "ImageRef",
    "ImageTagger",
    "NullTagger",
    "PrecomputedTagger",
    "TagJob",
    "TagResult",
    "TaggerError",
    "tag",
]
