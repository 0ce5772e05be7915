"""recsys: a deep-learning recommender and real-time personalization system.

Layers, lowest first; a module imports only from its own layer or lower ones:

    data -> features -> models -> training / eval -> index -> export -> serving

The real-time side (``events``, ``profiles``, ``segments``, ``privacy``) stands on
``data`` and ``features``; ``serving`` may read profiles.
"""

__version__ = "0.1.0"
