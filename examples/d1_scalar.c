/* Seed §D-1: backpropagation by hand on y = (x1*x2 + x3)^2, checked against autograd.
 *
 *   a = x1*x2 + x3,  y = a^2
 *   dy/dx1 = 2a*x2,  dy/dx2 = 2a*x1,  dy/dx3 = 2a
 *
 * At x = [2, -3, 0.5]: a = -5.5 and x.grad = [33, -22, -11]. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include "ag/ag.h"

int main(void) {
    const float xs[3] = {2.0f, -3.0f, 0.5f};
    /* x lives outside every scope: the caller owns it and releases it at the end. */
    ag_tensor *x = ag_from_f32(xs, 1, (int64_t[]){3});
    if (!x || ag_set_requires_grad(x, true) != AG_OK) {
        fprintf(stderr, "d1: creating x failed: %s\n", ag_last_error());
        ag_release(x);
        return EXIT_FAILURE;
    }

    ag_scope *step = ag_scope_begin(); /* a, y and the nested temporaries belong to it */
    ag_tensor *a = ag_add(ag_mul(ag_select(x, 0, 0), ag_select(x, 0, 1)), ag_select(x, 0, 2));
    ag_tensor *y = ag_pow_scalar(a, 2);
    double a_val = 0, y_val = 0;
    ag_status st = y ? ag_backward(y, NULL) : ag_last_status();
    if (st == AG_OK) st = ag_item(a, &a_val);
    if (st == AG_OK) st = ag_item(y, &y_val);
    ag_scope_end(step);

    float grad[3] = {0};
    if (st == AG_OK)
        st = ag_to_host(ag_tensor_grad(x), grad, sizeof grad); /* x.grad outlives the scope */
    if (st != AG_OK) {
        fprintf(stderr, "d1: %s\n", ag_last_error());
        ag_release(x);
        return EXIT_FAILURE;
    }

    const double hand[3] = {2 * a_val * xs[1], 2 * a_val * xs[0], 2 * a_val};
    const double expected[3] = {33, -22, -11};
    printf("a = x1*x2 + x3 = %g, y = a^2 = %g\n", a_val, y_val);
    printf("x.grad = ");
    ag_print(ag_tensor_grad(x));
    printf("%-8s %12s %12s %12s\n", "", "autograd", "by hand", "expected");
    static const char *const names[3] = {"dy/dx1", "dy/dx2", "dy/dx3"};
    static const char *const formulas[3] = {"2a*x2", "2a*x1", "2a"};
    int bad = 0;
    for (int i = 0; i < 3; i++) {
        bool ok = fabs(grad[i] - hand[i]) < 1e-5 && fabs(grad[i] - expected[i]) < 1e-5;
        printf("%-8s %12g %12g %12g   (%s)%s\n", names[i], grad[i], hand[i], expected[i],
               formulas[i], ok ? "" : "  MISMATCH");
        bad += !ok;
    }
    ag_release(x);
    printf("%s\n", bad ? "FAILED" : "OK: autograd matches the hand derivation");
    return bad ? EXIT_FAILURE : EXIT_SUCCESS;
}
