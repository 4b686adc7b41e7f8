"""Samplers beyond the paper, registered by name in :data:`repaint.pipeline.SAMPLERS`."""
