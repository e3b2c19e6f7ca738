/* Autocast (torch.autocast): a thread-local region in which ops choose their own compute
 * dtype. Ops flagged AG_OPF_AUTOCAST_LOW (matmul, linear: the ones that gain from 16-bit
 * arithmetic) cast their float inputs to the region's float16/bfloat16; ops flagged
 * AG_OPF_AUTOCAST_F32 (softmax, log_softmax, layer_norm, cross_entropy, exp, log, pow, sum:
 * the ones that lose accuracy in 16 bits) cast them to float32; every other op runs in its
 * inputs' dtype. The casts are ordinary recorded conversions, so gradients flow back to
 * float32 parameters in float32. The lists follow PyTorch's CUDA autocast lists for the ops
 * ag has. */
#include "internal.h"

_Thread_local ag_autocast ag__autocast_state;

ag_status ag_autocast_set(ag_autocast state, ag_autocast *previous) {
    if (state.enabled && !ag__is_low_precision(state.dtype))
        return ag__error(AG_ERR_DTYPE, "autocast: expected float16 or bfloat16, got %s",
                         ag_dtype_name(state.dtype));
    if (previous) *previous = ag__autocast_state;
    ag__autocast_state = state;
    return AG_OK;
}

ag_autocast ag_autocast_get(void) {
    return ag__autocast_state;
}

/* The dtype autocast runs op in. */
static ag_dtype target_dtype(const ag_op_def *op) {
    return op->flags & AG_OPF_AUTOCAST_LOW ? ag__autocast_state.dtype : AG_F32;
}

/* Whether input i is a float tensor autocast converts. */
static bool castable(const ag_op_def *op, const ag_tensor *x, int i) {
    return x->dtype != AG_I64 && !ag__input_bit(op->nondiff_inputs, i);
}

bool ag__autocast_wanted(const ag_op_def *op, int n_inputs, ag_tensor *const *inputs) {
    const ag_dtype target = target_dtype(op);
    for (int i = 0; i < n_inputs; i++)
        if (castable(op, inputs[i], i) && inputs[i]->dtype != target) return true;
    return false;
}

ag_status ag__autocast_dispatch(ag_op_def *op, int n_inputs, ag_tensor *const *inputs,
                                const ag_attrs *attrs, int n_outputs, ag_tensor **outputs) {
    enum { MAX_IN = 16 };
    const ag_dtype target = target_dtype(op);
    if (n_inputs > MAX_IN)
        return ag__error(AG_ERR_UNSUPPORTED, "autocast: %s has more than %d inputs", op->name,
                         MAX_IN);
    ag_scope *scope = ag_scope_begin();
    ag_tensor *cast[MAX_IN];
    ag_status st = AG_OK;
    for (int i = 0; i < n_inputs && st == AG_OK; i++) {
        ag_tensor *x = inputs[i];
        cast[i] = castable(op, x, i) && x->dtype != target ? ag_to_dtype(x, target) : x;
        if (!cast[i]) st = ag_last_status();
    }
    /* The cast inputs have the target dtype already: the inner call casts nothing. */
    if (st == AG_OK) st = ag__dispatch(op, n_inputs, cast, attrs, n_outputs, outputs);
    for (int j = 0; j < n_outputs; j++) ag_retain(outputs[j]);
    ag_scope_end(scope);
    for (int j = 0; j < n_outputs; j++)
        if (outputs[j] && !ag__scope_adopt(outputs[j]) && st == AG_OK) st = ag_last_status();
    if (st != AG_OK)
        for (int j = 0; j < n_outputs; j++) {
            ag_release(outputs[j]);
            outputs[j] = NULL;
        }
    return st;
}
