"""High-level API: the whole EP-SAM pipeline as resumable stages, and whole-slide inference."""
from .pipeline import EPSAMPipeline
from .pipeline_config import PipelineConfigError, validate_pipeline_config
from .pipeline_summary import format_summary
from .stage_records import StageChanged

__all__ = ['EPSAMPipeline', 'PipelineConfigError', 'StageChanged', 'format_summary',
           'validate_pipeline_config']
