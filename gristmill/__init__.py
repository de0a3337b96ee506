"""gristmill: select and prepare corpora for language models, and measure its worth."""

__version__ = "0.1.0"
