"""Error classes shared by every layer.

`ir/` imports nothing from the front end, so the base error lives here; the front end
re-exports it as ``ember.base.MXNetError`` (alias ``EmberError``), as MXNet users expect.
"""


class EmberError(RuntimeError):
    """A mistake a user can make: wrong shapes, dtypes, arguments, files."""


class ShapeError(EmberError, ValueError):
    """Shapes of an op's inputs do not fit its rule."""


class DimConflict(ShapeError):
    """Two known values of one dim disagree: no later inference can reconcile them."""


class DTypeError(EmberError, TypeError):
    """Inputs of an op that must share one dtype do not (MXNet's type inconsistency)."""


class AttrError(EmberError, TypeError):
    """An op got an unknown or ill-typed attribute or argument."""


def fmt_shapes(shapes) -> str:
    """Format a list of shapes the way errors print them: ``(2, 3), (4, 5)``."""
    return ", ".join("(" + ", ".join("?" if d is None else str(d) for d in s) + ")"
                     if isinstance(s, tuple) else str(s) for s in shapes)
