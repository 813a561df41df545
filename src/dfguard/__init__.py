"""dfguard: a continual-learning platform for detecting manipulated face videos and images."""

__version__ = "0.1.0"
