"""Image-embedding cache for SAM's frozen image encoder."""
from .embedding_cache import (VIEWS, EmbeddingCache, ModuleFingerprint, apply_view,
                              image_content_hash)

__all__ = ['VIEWS', 'EmbeddingCache', 'ModuleFingerprint', 'apply_view', 'image_content_hash']
