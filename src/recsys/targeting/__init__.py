"""Targeting rules: YAML rules over segments and request context that shape a list.

:func:`load_rules` compiles a rules file into a :class:`~recsys.runtime.targeting.RuleSet`
(the part the request path runs); :mod:`recsys.targeting.conditions` is the condition
language.
"""

from recsys.targeting.conditions import Condition, compile_condition
from recsys.targeting.loader import load_rules, load_rules_text

__all__ = ["Condition", "compile_condition", "load_rules", "load_rules_text"]
