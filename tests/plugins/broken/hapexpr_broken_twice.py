"""Registers one method, then fails on a second: the registry must take the first back."""

from hapexpr.methods import Method, register


@register
class Twice(Method):
    name = "twice"


@register
class Clash(Method):
    name = "ridge-probe"
