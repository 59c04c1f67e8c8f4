"""High-level API: the whole EP-SAM pipeline as resumable stages."""
from .pipeline import EPSAMPipeline, format_summary

__all__ = ['EPSAMPipeline', 'format_summary']
