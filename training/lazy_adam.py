"""LazyAdam: Adam whose cost per step is the rows a batch touches, not the table size.

Keras 2's ``tf.keras.optimizers.Adam`` (like its legacy version) decays both moment
estimates of *every* row at every step, even when the gradient is sparse
(``tf.IndexedSlices`` from an embedding gather): for a table of N rows it reads and writes
3·N·d floats a step, so training cost grows with the catalogue — at 10⁷ items × 64 that
is ~7.7 GB of memory traffic a step. TF Addons' LazyAdam, which solved this, is no longer
maintained for current TensorFlow, so the toolkit carries its own (Keras's optimizer
base class does the rest: learning-rate schedules, get_config, checkpoints).

For the rows R that a step's sparse gradient g touches (duplicates summed first), with
t the step count and α_t = lr·√(1 − β₂ᵗ)/(1 − β₁ᵗ):

    m_R ← β₁ m_R + (1 − β₁) g_R
    v_R ← β₂ v_R + (1 − β₂) g_R²
    θ_R ← θ_R − α_t m_R / (√v_R + ε)

and every other row — its parameters *and* its moments — is left as it is. On a dense
gradient (or when every row is in every batch) this is exactly Adam (Kingma & Ba, "Adam:
A Method for Stochastic Optimization", ICLR 2015). Rows missing from a step keep their
moments undecayed, as in TF Addons' LazyAdam and PyTorch's SparseAdam; that is the
approximation that makes the step O(rows touched).

The update also compiles with XLA (``jit_compile=True``), where it is the fastest step on
CPU. Keras de-duplicates a sparse gradient with ``tf.unique``, whose output shape XLA
cannot know, and a sort of the K looked-up rows compiles into a slow comparison sort on
CPU, so this optimizer groups the rows with one int32 scratch row per table row instead:
occurrence j (of K) writes its position j into scratch[row_j]; duplicates of a row leave
one of their positions there, which every occurrence of that row then reads back as its
group's label. A segment sum over the labels gives each occurrence its row's summed
gradient g_R; every occurrence computes that row's new m, v and θ and writes them with a
scatter that overwrites, so duplicates write identical values and the result is the
update above. The scratch is read only where it was just written, never needs clearing,
and costs 4 bytes a row (Adam's moments cost 8·d).
"""

import tensorflow as tf


@tf.keras.utils.register_keras_serializable(package="twotower")
class LazyAdam(tf.keras.optimizers.Adam):
    """Adam with sparse (row-wise, lazy) updates for ``tf.IndexedSlices`` gradients.

    Takes Adam's arguments (``learning_rate``, ``beta_1``, ``beta_2``, ``epsilon``, …);
    ``amsgrad`` is refused for sparse use (its running maximum would need the dense
    table).

    Example:
      model.compile(optimizer=twotower.towers.LazyAdam(1e-3))
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 amsgrad=False, name="LazyAdam", **kwargs):
        if amsgrad:
            raise ValueError("LazyAdam: amsgrad=True is not supported (its running maximum "
                             "is a dense update); use tf.keras.optimizers.Adam for it")
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2,
                         epsilon=epsilon, amsgrad=False, name=name, **kwargs)

    def build(self, var_list):
        super().build(var_list)
        if getattr(self, "_scratch", None) is not None:
            return
        # one int32 per row of every table (module docstring): where _row_totals groups a
        # sparse gradient's rows; placed with the table, as Keras places the moments. Not
        # optimizer state: set through __dict__ so that neither Keras' variable list nor
        # TensorFlow's checkpoint tracking holds it (what it holds between steps is never
        # read).
        strategy = tf.distribute.get_strategy()
        scratch = []
        for var in var_list:
            with strategy.extended.colocate_vars_with(var):
                scratch.append(tf.Variable(tf.zeros(var.shape[:1], tf.int32),
                                           trainable=False,
                                           name=f"row_scratch/{var._shared_name}"))
        self.__dict__["_scratch"] = scratch

    def update_step(self, gradient, variable):
        if not isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable)
        lr = tf.cast(self.learning_rate, variable.dtype)
        step = tf.cast(self.iterations + 1, variable.dtype)
        beta_1 = tf.cast(self.beta_1, variable.dtype)
        beta_2 = tf.cast(self.beta_2, variable.dtype)
        alpha = lr * tf.sqrt(1 - tf.pow(beta_2, step)) / (1 - tf.pow(beta_1, step))
        key = self._var_key(variable)
        m = self._momentums[self._index_dict[key]]
        v = self._velocities[self._index_dict[key]]

        rows, g = _row_totals(gradient, self._scratch[self._index_dict[key]])
        m_rows = beta_1 * tf.gather(m, rows) + (1 - beta_1) * g
        v_rows = beta_2 * tf.gather(v, rows) + (1 - beta_2) * tf.square(g)
        epsilon = self.epsilon
        if self.adaptive_epsilon:  # as Adam(adaptive_epsilon=True): ε·√(1 − β₂ᵗ)
            epsilon = epsilon * tf.sqrt(1 - tf.pow(beta_2, step))
        theta_rows = tf.gather(variable, rows) - alpha * m_rows / (tf.sqrt(v_rows) + epsilon)
        # overwrite, not add: the occurrences of one row carry identical values
        m.scatter_update(tf.IndexedSlices(m_rows, rows))
        v.scatter_update(tf.IndexedSlices(v_rows, rows))
        variable.scatter_update(tf.IndexedSlices(theta_rows, rows))

    def _deduplicate_sparse_grad(self, grads):
        # the rows are grouped in update_step (_row_totals), with shapes XLA can compile
        return grads


def _row_totals(gradient, scratch):
    """(rows [K], totals [K, d]) of a sparse ``gradient`` with K looked-up rows, possibly
    repeated: for each occurrence, the sum of the gradient over every occurrence of its
    row. ``scratch``: an int32 variable with a slot per row of the table, overwritten
    where the rows are (module docstring). Shapes are the gradient's own (no
    ``tf.unique``), so the step compiles with XLA."""
    rows = tf.cast(gradient.indices, tf.int32)
    k = tf.shape(rows)[0]
    scratch.scatter_update(tf.IndexedSlices(tf.range(k), rows))
    label = tf.gather(scratch, rows)   # one position per distinct row, shared by its copies
    totals = tf.math.unsorted_segment_sum(gradient.values, label, k)
    return rows, tf.gather(totals, label)
