"""hapexpr-broken: a plugin distribution whose entry points fail in every way a plugin can."""

import hapexpr_no_such_dependency  # noqa: F401  (not installed: importing this package fails)
