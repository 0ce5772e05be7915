"""Data layer: loaders for public datasets and event logs, cleansing, splits.

A dataset is a config (``configs/dataset/<name>.yaml``) that names its loader;
:mod:`recsys.data.registry` builds the typed config and runs the loader
(:func:`recsys.data.registry.load`). Interaction loaders return an
:class:`~recsys.data.frame.InteractionData` whose ``interactions`` frame uses the
column names in :mod:`recsys.data.frame`; the Criteo loader returns its
impression table. Every loader reports what it read, kept, repaired, filtered
and rejected (:class:`~recsys.data.frame.LoadReport`).
"""
