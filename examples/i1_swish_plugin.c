/* Seed §I: a custom differentiable op and gradcheck. The seed's SwishFn is the swish plugin
 * (plugins/swish: op "swish::swish", a cpu kernel and a backward in ag ops), loaded at run
 * time. Computes y = swish(x) and dy/dx for x = randn(8), compares the gradient with the
 * analytic s + x·s·(1−s), s = sigmoid(x), then runs gradcheck in float64 (§I-2).
 *
 *   ex_i1_swish_plugin [path/to/libag_op_swish.so]
 *
 * Without a path the op comes from AG_PLUGINS (loaded by ag_init), else from
 * libag_op_swish.so next to libag (build/lib in the build tree). */
#define _GNU_SOURCE /* dladdr */
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ag/plugin.h"

#define SWISH_OP "swish::swish"

/* The swish op, loading the plugin as the header comment says; NULL with an error. */
static const ag_op *find_swish(const char *path) {
    if (path) return ag_plugin_load(path) == AG_OK ? ag_op_find(SWISH_OP) : NULL;
    if (ag_init() != AG_OK) return NULL;
    const ag_op *op = ag_op_find(SWISH_OP);
    if (op) return op;
    ag_clear_error();
    Dl_info info;
    const char *slash = dladdr((const void *)ag_version, &info) && info.dli_fname
                            ? strrchr(info.dli_fname, '/')
                            : NULL;
    char beside[4096];
    snprintf(beside, sizeof beside, "%.*s/libag_op_swish.so",
             slash ? (int)(slash - info.dli_fname) : 1, slash ? info.dli_fname : ".");
    return ag_plugin_load(beside) == AG_OK ? ag_op_find(SWISH_OP) : NULL;
}

/* The function gradcheck differentiates: swish(inputs[0]). */
static ag_tensor *swish_fn(ag_tensor *const *inputs, void *user) {
    return ag_op_call1(user, 1, inputs, NULL);
}

/* A randn tensor of n elements, requiring grad. */
static ag_tensor *randn_leaf(ag_generator *gen, ag_dtype dtype, int64_t n) {
    ag_tensor *x = ag_randn(gen, dtype, 1, &n);
    return x && ag_set_requires_grad(x, true) == AG_OK ? x : NULL;
}

int main(int argc, char **argv) {
    const ag_op *swish = find_swish(argc > 1 ? argv[1] : NULL);
    if (!swish) {
        fprintf(stderr, "i1: %s\n", ag_last_error());
        return EXIT_FAILURE;
    }
    ag_scope *scope = ag_scope_begin(); /* owns every tensor below, grads included */
    ag_generator *gen = ag_generator_new(0);

    /* x = torch.randn(8, requires_grad=True); swish(x).sum().backward() */
    ag_tensor *x = randn_leaf(gen, AG_F32, 8);
    ag_tensor *y = x ? ag_op_call1(swish, 1, &x, NULL) : NULL;
    ag_status st = y ? ag_backward(ag_sum(y, 0, NULL, false), NULL) : ag_last_status();
    float xv[8] = {0}, yv[8] = {0}, gv[8] = {0};
    if (st == AG_OK) st = ag_to_host(x, xv, sizeof xv);
    if (st == AG_OK) st = ag_to_host(y, yv, sizeof yv);
    if (st == AG_OK) st = ag_to_host(ag_tensor_grad(x), gv, sizeof gv);

    /* x = torch.randn(4, dtype=torch.double, requires_grad=True); gradcheck(swish, (x,)) */
    ag_tensor *x64 = st == AG_OK ? randn_leaf(gen, AG_F64, 4) : NULL;
    ag_generator_free(gen);
    if (st == AG_OK && !x64) st = ag_last_status();
    if (st != AG_OK) {
        fprintf(stderr, "i1: %s\n", ag_last_error());
        ag_scope_end(scope);
        return EXIT_FAILURE;
    }
    ag_status check = ag_gradcheck(swish_fn, (void *)swish, 1, &x64, NULL);

    printf("x.grad = ");
    ag_print(ag_tensor_grad(x));
    printf("%-3s %11s %11s %11s %11s\n", "i", "x", "swish(x)", "x.grad", "s+x*s*(1-s)");
    int bad = 0;
    for (int i = 0; i < 8; i++) {
        double s = 1 / (1 + exp(-(double)xv[i]));
        double analytic = s + xv[i] * s * (1 - s);
        bool ok = fabs(gv[i] - analytic) < 1e-6 && fabs(yv[i] - xv[i] * s) < 1e-6;
        printf("%-3d %11.7f %11.7f %11.7f %11.7f%s\n", i, xv[i], yv[i], gv[i], analytic,
               ok ? "" : "  MISMATCH");
        bad += !ok;
    }
    printf("gradcheck (float64, x = randn(4)): %s%s\n",
           check == AG_OK ? "passed" : "FAILED: ", check == AG_OK ? "" : ag_last_error());
    bad += check != AG_OK;
    ag_scope_end(scope);
    printf("%s\n", bad ? "FAILED"
                       : "OK: the plugin's gradient is s + x*s*(1-s) and gradcheck "
                         "passes");
    return bad ? EXIT_FAILURE : EXIT_SUCCESS;
}
