"""High-level API: the whole EP-SAM pipeline as resumable stages."""
from .pipeline import (EPSAMPipeline, PipelineConfigError, StageChanged, format_summary,
                       validate_pipeline_config)

__all__ = ['EPSAMPipeline', 'PipelineConfigError', 'StageChanged', 'format_summary',
           'validate_pipeline_config']
