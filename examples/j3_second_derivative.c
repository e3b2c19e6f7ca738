/* Seed §J-3: a second derivative through create_graph.
 *
 *   y = sum(x^2),  g = dy/dx = 2x (recorded, create_graph),  h = d(sum g)/dx = [2, 2, 2] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include "ag/ag.h"

int main(void) {
    ag_scope *scope = ag_scope_begin(); /* owns every tensor below, grads included */
    ag_generator *gen = ag_generator_new(0);
    ag_tensor *x = gen ? ag_randn(gen, AG_F32, 1, (int64_t[]){3}) : NULL;
    ag_generator_free(gen);
    ag_status st = x ? ag_set_requires_grad(x, true) : ag_last_status();

    ag_tensor *y = ag_sum(ag_pow_scalar(x, 2), 0, NULL, false);
    ag_tensor *g = NULL, *h = NULL;
    /* retain_graph = create_graph, PyTorch's default for autograd.grad. */
    if (st == AG_OK) st = y ? ag_grad(1, &y, 1, &x, NULL, true, true, false, &g) : ag_last_status();
    ag_tensor *g_sum = st == AG_OK ? ag_sum(g, 0, NULL, false) : NULL;
    if (st == AG_OK)
        st = g_sum ? ag_grad(1, &g_sum, 1, &x, NULL, false, false, false, &h) : ag_last_status();

    float xv[3] = {0}, gv[3] = {0}, hv[3] = {0};
    if (st == AG_OK) st = ag_to_host(x, xv, sizeof xv);
    if (st == AG_OK) st = ag_to_host(g, gv, sizeof gv);
    if (st == AG_OK) st = ag_to_host(h, hv, sizeof hv);
    if (st != AG_OK) {
        fprintf(stderr, "j3: %s\n", ag_last_error());
        ag_scope_end(scope);
        return EXIT_FAILURE;
    }

    printf("x = ");
    ag_print(x);
    printf("g = dy/dx = ");
    ag_print(g);
    printf("h = d(sum g)/dx = ");
    ag_print(h);
    printf("%-4s %12s %12s %8s %8s\n", "i", "g", "2x", "h", "expect");
    int bad = 0;
    for (int i = 0; i < 3; i++) {
        bool ok = fabsf(gv[i] - 2 * xv[i]) < 1e-6f && fabsf(hv[i] - 2) < 1e-6f;
        printf("%-4d %12.7f %12.7f %8g %8g%s\n", i, gv[i], 2 * xv[i], hv[i], 2.0,
               ok ? "" : "  MISMATCH");
        bad += !ok;
    }
    /* The second grad was not recorded: h is a constant. */
    if (ag_requires_grad(h)) {
        printf("h requires grad although create_graph was false\n");
        bad++;
    }
    ag_scope_end(scope);
    printf("%s\n", bad ? "FAILED" : "OK: h = [2, 2, 2]");
    return bad ? EXIT_FAILURE : EXIT_SUCCESS;
}
