"""Forecasters that follow one contract (see :mod:`pipeline.models.base`)."""
