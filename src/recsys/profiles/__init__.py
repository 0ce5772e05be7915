"""Profiles: static attributes and per-event dynamic aggregates, online and offline.

Public API: :class:`~recsys.profiles.state.UserProfile`,
:class:`~recsys.profiles.config.ProfileConfig`,
:class:`~recsys.profiles.attributes.AttributeSchema`,
:func:`~recsys.profiles.features.profile_features`,
:func:`~recsys.profiles.offline.build_profiles`,
:class:`~recsys.profiles.processor.EventProcessor`,
:class:`~recsys.profiles.consumer.StreamConsumer`,
:class:`~recsys.profiles.service.ProfileService`.
"""

from recsys.profiles.attributes import AttributeSchema, AttributeSpec, AttributeValue
from recsys.profiles.config import ProfileConfig, WindowSpec
from recsys.profiles.consumer import ConsumerConfig, StreamConsumer
from recsys.profiles.features import ProfileFeatures, dense_feature_names, profile_features
from recsys.profiles.offline import build_profiles
from recsys.profiles.processor import CachedUser, EventProcessor, ProcessorConfig, ProfileHook
from recsys.profiles.service import ProfileService
from recsys.profiles.state import UserProfile

__all__ = [
    "AttributeSchema",
    "AttributeSpec",
    "AttributeValue",
    "CachedUser",
    "ConsumerConfig",
    "EventProcessor",
    "ProcessorConfig",
    "ProfileConfig",
    "ProfileFeatures",
    "ProfileHook",
    "ProfileService",
    "StreamConsumer",
    "UserProfile",
    "WindowSpec",
    "build_profiles",
    "dense_feature_names",
    "profile_features",
]
