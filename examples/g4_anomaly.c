/* Anomaly mode (torch.autograd.detect_anomaly): loss = sum(sqrt(x)) at x = [0, 1, 4].
 *
 * d sqrt(x)/dx = 1 / (2 sqrt(x)) is Inf at x = 0. Without anomaly mode the Inf lands in
 * x.grad unnoticed; with it, backward fails at sqrt's backward and the message names the
 * op, the output and where the forward sqrt was called. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ag/ag.h"

/* One forward and backward of sum(sqrt(x)) in a scope of its own; x.grad is reset first. */
static ag_status step(ag_tensor *x) {
    ag_status st = ag_set_grad(x, NULL);
    ag_scope *scope = ag_scope_begin();
    ag_tensor *loss = ag_sum(ag_sqrt(x), 0, NULL, false);
    if (st == AG_OK) st = loss ? ag_backward(loss, NULL) : ag_last_status();
    ag_scope_end(scope);
    return st;
}

int main(void) {
    const float xs[3] = {0.0f, 1.0f, 4.0f};
    ag_tensor *x = ag_from_f32(xs, 1, (int64_t[]){3});
    if (!x || ag_set_requires_grad(x, true) != AG_OK) {
        fprintf(stderr, "g4: creating x failed: %s\n", ag_last_error());
        ag_release(x);
        return EXIT_FAILURE;
    }

    bool prev = ag_set_detect_anomaly(false); /* whatever AG_DETECT_ANOMALY says */
    ag_status st = step(x);
    if (st != AG_OK) {
        fprintf(stderr, "g4: backward without anomaly mode failed: %s\n", ag_last_error());
        ag_release(x);
        return EXIT_FAILURE;
    }
    printf("without anomaly mode backward succeeds, and x.grad = ");
    ag_print(ag_tensor_grad(x));

    ag_set_detect_anomaly(true);
    st = step(x);
    ag_set_detect_anomaly(prev);
    ag_release(x);
    printf("with anomaly mode backward fails with %s:\n%s\n", ag_status_name(st), ag_last_error());
    static const char *const expected[] = {"Function 'sqrt backward' returned inf values",
                                           "0th output", "sqrt(float32[3]) called from:"};
    int bad = st != AG_ERR_ANOMALY;
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++)
        if (!strstr(ag_last_error(), expected[i])) {
            fprintf(stderr, "g4: the message lacks \"%s\"\n", expected[i]);
            bad = 1;
        }
    return bad ? EXIT_FAILURE : EXIT_SUCCESS;
}
