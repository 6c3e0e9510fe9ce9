"""Entry points of hapexpr-broken that import but cannot be registered."""

from hapexpr.methods import Method


class ElasticNetAgain(Method):
    """Would replace the built-in elastic net."""

    name = "elastic-net"


class Misnamed(Method):
    """Its entry point is called `misnamed`."""

    name = "something-else"


class NotAMethod:
    name = "not-a-method"
