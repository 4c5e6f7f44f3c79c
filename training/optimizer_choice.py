"""Which Adam the recipes' :func:`~twotower.training.resumable_fit.fit` compiles with.

Two ways to run Adam on a two-tower model whose embedding tables get sparse gradients:

* ``adam`` — :class:`~twotower.training.xla_adam.XLAAdam` in a step compiled with XLA
  (``tf.keras.optimizers.Adam`` without XLA). Every row of every table — weights and
  both moments — is read and written at every step, so the step's cost grows with the
  table: fastest for small catalogues, where the dense update is cheaper than a
  de-duplication and three scatters.
* ``lazy_adam`` — :class:`~twotower.training.lazy_adam.LazyAdam`, in a step compiled
  with XLA where the step allows (uncompiled otherwise): only the rows a batch uses are
  updated, so the step's cost follows the batch, not the catalogue.

``auto`` picks ``lazy_adam`` when the model's embedding tables hold more than
:data:`ROWS_PER_EXAMPLE` rows per example of the batch in all, else ``adam``. Dense
Adam's cost a step is proportional to the tables' rows (the rows of the model's
two-dimensional trainable variables; dense layers' kernels add only their input
widths, tens to hundreds), LazyAdam's to the rows the batch uses (a few per example:
ids, history), so the break-even is a number of rows per example. The figures behind
it are in docs/benchmarks.md.
"""

import dataclasses

OPTIMIZERS = ("auto", "adam", "lazy_adam")
ROWS_PER_EXAMPLE = 24


@dataclasses.dataclass(frozen=True)
class OptimizerChoice:
    """What :func:`choose_optimizer` decided: ``name`` ("adam" or "lazy_adam"), whether
    the step is compiled with XLA (``jit``), the tables' rows and why (``reason``, one
    line for the user)."""

    name: str
    jit: bool
    table_rows: int
    reason: str

    def make(self, learning_rate):
        """The Keras optimizer this choice stands for, at ``learning_rate``."""
        import tensorflow as tf

        if self.name == "lazy_adam":
            from twotower.training.lazy_adam import LazyAdam

            return LazyAdam(learning_rate)
        if self.jit:
            from twotower.training.xla_adam import XLAAdam

            return XLAAdam(learning_rate)
        return tf.keras.optimizers.Adam(learning_rate)


def table_rows(variables):
    """The rows of the two-dimensional variables among ``variables``, summed (0 if none):
    the rows dense Adam reads and writes at every step."""
    return sum(int(v.shape[0]) for v in variables
               if len(v.shape) == 2 and v.shape[0] is not None)


def choose_optimizer(setting, table_rows, *, jit, batch_size,
                     rows_per_example=ROWS_PER_EXAMPLE):
    """Decides the optimizer for ``setting`` ("auto", "adam" or "lazy_adam").

    ``table_rows``: rows of the model's embedding tables in all (:func:`table_rows`);
    ``jit``: whether the step may be compiled with XLA (numeric inputs, one device, no
    ``--no-jit``); above ``rows_per_example`` × ``batch_size`` rows, ``auto`` takes
    ``lazy_adam``. Either is compiled when ``jit`` is true. Raises ValueError naming
    ``--optimizer`` for another setting."""
    if setting not in OPTIMIZERS:
        raise ValueError(f"--optimizer must be one of {OPTIMIZERS}, got {setting!r}")
    rows = int(table_rows)
    threshold = int(rows_per_example) * int(batch_size)
    if setting == "auto":
        lazy = rows > threshold
        why = (f"auto: embedding tables of {rows:,} rows in all "
               f"{'>' if lazy else '<='} {int(rows_per_example)} × batch {int(batch_size)} "
               f"= {threshold:,}")
    else:
        lazy = setting == "lazy_adam"
        why = f"--optimizer {setting}"
    if lazy:
        return OptimizerChoice("lazy_adam", bool(jit), rows,
                               f"LazyAdam, rows a batch uses only, "
                               f"{'XLA' if jit else 'uncompiled'} ({why})")
    return OptimizerChoice("adam", bool(jit), rows,
                           f"Adam, every row every step, {'XLA' if jit else 'uncompiled'} "
                           f"({why})")
