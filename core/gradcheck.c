/* gradcheck and gradgradcheck: reverse-mode Jacobians against central differences in
 * float64, with PyTorch's tolerances (|analytical - numerical| <= atol + rtol*|numerical|). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

ag_gradcheck_options ag_gradcheck_defaults(void) {
    return (ag_gradcheck_options){1e-6, 1e-5, 1e-3};
}

/* Output of fn at the current inputs, as host doubles (fresh malloc, numel in *n). */
static ag_status eval_to_host(ag_gradcheck_fn fn, void *user, ag_tensor *const *inputs,
                              double **values, int64_t *n) {
    ag_scope *scope = ag_scope_begin();
    ag_tensor *out = fn(inputs, user);
    ag_status st = AG_OK;
    if (!out)
        st = ag__error_if_none(AG_ERR_INVALID_ARG, "gradcheck: the function returned NULL");
    else if (out->dtype != AG_F64)
        st = ag__error(AG_ERR_DTYPE, "gradcheck: the function must return float64, got %s",
                       ag_dtype_name(out->dtype));
    if (st == AG_OK) {
        *n = out->numel;
        *values = ag__malloc((size_t)(out->numel ? out->numel : 1) * sizeof **values);
        st = *values ? ag_to_host(out, *values, (size_t)out->numel * sizeof **values)
                     : ag__error(AG_ERR_OUT_OF_MEMORY, "gradcheck: out of host memory");
    }
    ag_scope_end(scope);
    return st;
}

/* Overwrites input element j (row-major order) with value, outside the graph. */
static ag_status poke(ag_tensor *t, double *host, int64_t j, double value) {
    host[j] = value;
    bool prev = ag_set_grad_enabled(false);
    ag_scope *scope = ag_scope_begin();
    ag_tensor *src = ag__from_host(AG_F64, t->ndim, t->shape, host, t->storage->device);
    ag_status st = src && ag_copy_(t, src) ? AG_OK : ag_last_status();
    ag_scope_end(scope);
    ag_set_grad_enabled(prev);
    return st;
}

/* Numerical Jacobian column block of input i: num[j * n_out + k] = d out_k / d in_j. */
static ag_status numerical(ag_gradcheck_fn fn, void *user, ag_tensor *const *inputs, int i,
                           double eps, int64_t n_out, double *num) {
    ag_tensor *t = inputs[i];
    double *host = ag__malloc((size_t)(t->numel ? t->numel : 1) * sizeof *host);
    if (!host) return ag__error(AG_ERR_OUT_OF_MEMORY, "gradcheck: out of host memory");
    ag_status st = ag_to_host(t, host, (size_t)t->numel * sizeof *host);
    for (int64_t j = 0; j < t->numel && st == AG_OK; j++) {
        double orig = host[j], *plus = NULL, *minus = NULL;
        int64_t np = 0, nm = 0;
        st = poke(t, host, j, orig + eps);
        if (st == AG_OK) st = eval_to_host(fn, user, inputs, &plus, &np);
        if (st == AG_OK) st = poke(t, host, j, orig - eps);
        if (st == AG_OK) st = eval_to_host(fn, user, inputs, &minus, &nm);
        if (st == AG_OK) st = poke(t, host, j, orig);
        for (int64_t k = 0; st == AG_OK && k < n_out; k++)
            num[j * n_out + k] = (plus[k] - minus[k]) / (2 * eps);
        free(plus);
        free(minus);
    }
    free(host);
    return st;
}

/* Analytical Jacobian of input i from one ag_grad per output element. */
static ag_status analytical(ag_tensor *out, ag_tensor *const *inputs, int i, double *ana) {
    ag_tensor *t = inputs[i];
    int64_t n_out = out->numel;
    double *onehot = ag__calloc((size_t)(n_out ? n_out : 1), sizeof *onehot);
    double *g = ag__malloc((size_t)(t->numel ? t->numel : 1) * sizeof *g);
    ag_status st =
        onehot && g ? AG_OK : ag__error(AG_ERR_OUT_OF_MEMORY, "gradcheck: out of memory");
    for (int64_t k = 0; k < n_out && st == AG_OK; k++) {
        ag_scope *scope = ag_scope_begin();
        onehot[k] = 1;
        ag_tensor *go = ag__from_host(AG_F64, out->ndim, out->shape, onehot, out->storage->device);
        onehot[k] = 0;
        ag_tensor *grad = NULL;
        st = go ? ag_grad(1, &out, 1, &inputs[i], &go, true, false, true, &grad) : ag_last_status();
        if (st == AG_OK && grad && grad->dtype != AG_F64)
            st = ag__error(AG_ERR_DTYPE, "gradcheck: gradient of input %d is %s, not float64", i,
                           ag_dtype_name(grad->dtype));
        if (st == AG_OK && grad) st = ag_to_host(grad, g, (size_t)t->numel * sizeof *g);
        for (int64_t j = 0; st == AG_OK && j < t->numel; j++)
            ana[j * n_out + k] = grad ? g[j] : 0.0;
        ag_scope_end(scope);
    }
    free(onehot);
    free(g);
    return st;
}

ag_status ag_gradcheck(ag_gradcheck_fn fn, void *user, int n_inputs, ag_tensor *const *inputs,
                       const ag_gradcheck_options *options) {
    ag_gradcheck_options opt = options ? *options : ag_gradcheck_defaults();
    if (!fn || n_inputs < 1 || !inputs)
        return ag__error(AG_ERR_INVALID_ARG, "gradcheck: need a function and inputs");
    for (int i = 0; i < n_inputs; i++) {
        if (!inputs[i])
            return ag__error_if_none(AG_ERR_INVALID_ARG, "gradcheck: input %d is NULL", i);
        if (inputs[i]->requires_grad && inputs[i]->dtype != AG_F64)
            return ag__error(AG_ERR_DTYPE,
                             "gradcheck: input %d requires grad but is %s; gradcheck needs "
                             "float64 for precision",
                             i, ag_dtype_name(inputs[i]->dtype));
    }
    ag_status st = AG_OK;
    bool any = false;
    for (int i = 0; i < n_inputs && st == AG_OK; i++) {
        if (!inputs[i]->requires_grad) continue;
        any = true;
        /* A fresh graph per input: the numerical pass below writes into the inputs, which
         * bumps their versions and would invalidate tensors saved by an older graph. */
        ag_scope *scope = ag_scope_begin();
        ag_tensor *out = fn(inputs, user);
        st = out ? AG_OK
                 : ag__error_if_none(AG_ERR_INVALID_ARG, "gradcheck: function returned NULL");
        if (st == AG_OK && out->dtype != AG_F64)
            st = ag__error(AG_ERR_DTYPE, "gradcheck: the function must return float64, got %s",
                           ag_dtype_name(out->dtype));
        int64_t n_out = st == AG_OK ? out->numel : 0, n_in = inputs[i]->numel;
        size_t cells = (size_t)(n_out * n_in > 0 ? n_out * n_in : 1);
        double *num = ag__calloc(cells, sizeof *num), *ana = ag__calloc(cells, sizeof *ana);
        if (st == AG_OK && (!num || !ana))
            st = ag__error(AG_ERR_OUT_OF_MEMORY, "gradcheck: out of memory");
        /* An output without history has an analytical Jacobian of zeros. */
        if (st == AG_OK && out->requires_grad) st = analytical(out, inputs, i, ana);
        if (st == AG_OK) st = numerical(fn, user, inputs, i, opt.eps, n_out, num);
        for (int64_t j = 0; st == AG_OK && j < n_in; j++)
            for (int64_t k = 0; st == AG_OK && k < n_out; k++) {
                double a = ana[j * n_out + k], n = num[j * n_out + k];
                if (fabs(a - n) <= opt.atol + opt.rtol * fabs(n)) continue;
                st = ag__error(AG_ERR_GRADCHECK,
                               "gradcheck: Jacobian mismatch for output 0 with respect to input "
                               "%d at (input element %lld, output element %lld): numerical %.10g, "
                               "analytical %.10g (atol %g, rtol %g)",
                               i, (long long)j, (long long)k, n, a, opt.atol, opt.rtol);
            }
        free(num);
        free(ana);
        ag_scope_end(scope);
    }
    if (st == AG_OK && !any) st = ag__error(AG_ERR_NO_GRAD, "gradcheck: no input requires grad");
    return st;
}

/* gradgradcheck's function: (inputs..., v) -> flattened vjp(fn, v) with create_graph. */
typedef struct vjp_closure {
    ag_gradcheck_fn fn;
    void *user;
    int n_inputs;
} vjp_closure;

static ag_tensor *vjp_flat(ag_tensor *const *args, void *user) {
    const vjp_closure *c = user;
    ag_tensor *v = args[c->n_inputs];
    ag_tensor *out = c->fn(args, c->user);
    if (!out) return NULL;
    ag_tensor *diff[AG_MAX_DIMS * 4], *grads[AG_MAX_DIMS * 4], *flat[AG_MAX_DIMS * 4];
    int m = 0;
    for (int i = 0; i < c->n_inputs; i++)
        if (args[i]->requires_grad) diff[m++] = args[i];
    if (!out->requires_grad) return ag_mul_scalar(ag_reshape(out, 1, (int64_t[]){-1}), 0.0);
    if (ag_grad(1, &out, m, diff, &v, true, true, true, grads) != AG_OK) return NULL;
    for (int i = 0; i < m; i++) {
        ag_tensor *g = grads[i] ? grads[i] : ag_zeros_like(diff[i]);
        flat[i] = ag_reshape(g, 1, (int64_t[]){-1});
    }
    return ag_cat(m, flat, 0);
}

ag_status ag_gradgradcheck(ag_gradcheck_fn fn, void *user, int n_inputs, ag_tensor *const *inputs,
                           const ag_gradcheck_options *options) {
    if (!fn || n_inputs < 1 || n_inputs >= AG_MAX_DIMS * 4 || !inputs)
        return ag__error(AG_ERR_INVALID_ARG, "gradgradcheck: need a function and 1..%d inputs",
                         AG_MAX_DIMS * 4 - 1);
    ag_scope *scope = ag_scope_begin();
    ag_tensor *out = fn(inputs, user);
    ag_status st =
        out ? AG_OK
            : ag__error_if_none(AG_ERR_INVALID_ARG, "gradgradcheck: function returned NULL");
    if (st == AG_OK) {
        /* A fixed generator: the check must be reproducible run to run. */
        ag_generator *gen = ag_generator_new(1234);
        ag_tensor *v = gen ? ag_randn(gen, AG_F64, out->ndim, out->shape) : NULL;
        ag_generator_free(gen);
        ag_tensor *args[AG_MAX_DIMS * 4];
        memcpy(args, inputs, (size_t)n_inputs * sizeof *args);
        args[n_inputs] = v;
        st = v ? ag_set_requires_grad(v, true) : ag_last_status();
        vjp_closure c = {fn, user, n_inputs};
        if (st == AG_OK) st = ag_gradcheck(vjp_flat, &c, n_inputs + 1, args, options);
    }
    ag_scope_end(scope);
    return st;
}
