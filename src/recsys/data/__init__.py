"""Data layer: loaders for public datasets and event logs, cleansing, splits.

Every loader returns an :class:`~recsys.data.frame.InteractionData` whose
``interactions`` frame uses the column names in :mod:`recsys.data.frame`.
"""
