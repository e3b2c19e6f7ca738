/* Seed §M: hooks and the order they fire in, as PyTorch 2.x.
 *
 * A Sequential(ReLU) gets a forward pre-hook that doubles its input, its ReLU a pre-hook
 * and a forward hook that only watch. The parameter w = [2, -3, 0.5] goes through it:
 * out = relu(2w) = [4, 0, 1] and loss = sum(out^2) = 17. In backward, a hook on out sees
 * d loss/d out = 2 out = [8, 0, 2] (retain_grad keeps it), a hook on w clamps its gradient
 * [16, 0, 4] into [-5, 5], and a post-accumulate-grad hook on w takes an SGD step (lr 0.1)
 * as soon as w.grad is final: w becomes [1.5, -3, 0.1]. Prints the firing order and the
 * values; exits non-zero when one differs from the expected. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "ag/nn.h"

/* The hooks that fired, in order. */
static const char *fired[16];
/* Entries of fired in use. */
static int n_fired;

/* Notes that the hook labelled `label` ran. */
static void note(const char *label) {
    if (n_fired < (int)(sizeof fired / sizeof fired[0])) fired[n_fired++] = label;
}

/* Forward pre-hook on the Sequential: doubles the input. */
static ag_tensor *double_input(ag_module *m, ag_tensor *input, void *user) {
    (void)m;
    note(user);
    return ag_mul_scalar(input, 2);
}

/* Forward pre-hook that only watches. */
static ag_tensor *watch_input(ag_module *m, ag_tensor *input, void *user) {
    (void)m;
    (void)input;
    note(user);
    return NULL;
}

/* Forward hook that only watches. */
static ag_tensor *watch_output(ag_module *m, ag_tensor *input, ag_tensor *output, void *user) {
    (void)m;
    (void)input;
    (void)output;
    note(user);
    return NULL;
}

/* Tensor hook that only watches the gradient. */
static ag_tensor *watch_grad(ag_tensor *grad, void *user) {
    (void)grad;
    note(user);
    return NULL;
}

/* Tensor hook that clamps the gradient into [-5, 5]. */
static ag_tensor *clamp_grad(ag_tensor *grad, void *user) {
    note(user);
    return ag_clamp(grad, true, -5, true, 5);
}

/* Post-accumulate-grad hook: w -= 0.1 * w.grad, then w.grad = None (an optimizer step per
 * parameter; backward runs without grad mode, so the in-place update is allowed). */
static void sgd_step(ag_tensor *w, void *user) {
    note(user);
    if (!ag_sub_(w, ag_mul_scalar(ag_tensor_grad(w), 0.1)) || ag_set_grad(w, NULL) != AG_OK)
        fprintf(stderr, "step: %s\n", ag_last_error());
}

/* Prints t's three values after `name` and compares them with want; true if they match. */
static bool check(const char *name, const ag_tensor *t, const double *want) {
    double got[3] = {NAN, NAN, NAN};
    bool ok = t && ag_numel(t) == 3 && ag_to_host(t, got, sizeof got) == AG_OK;
    for (int i = 0; i < 3; i++) ok = ok && fabs(got[i] - want[i]) < 1e-12;
    printf("%-10s [%g, %g, %g]  expected [%g, %g, %g]  %s\n", name, got[0], got[1], got[2], want[0],
           want[1], want[2], ok ? "ok" : "MISMATCH");
    return ok;
}

/* Registers the hooks on net and w, runs one forward and backward and checks them. */
static bool run(ag_module *net, ag_tensor *w) {
    ag_module *relu = ag_module_child(net, 0);
    bool ok = ag_module_register_forward_pre_hook(net, double_input, "pre Sequential") &&
              ag_module_register_forward_pre_hook(relu, watch_input, "pre ReLU") &&
              ag_module_register_forward_hook(relu, watch_output, "forward ReLU") &&
              ag_module_register_forward_hook(net, watch_output, "forward Sequential") &&
              ag_register_hook(w, clamp_grad, "hook w (clamp)") &&
              ag_register_post_accumulate_grad_hook(w, sgd_step, "post-accumulate w (step)");
    ag_tensor *out = ok ? ag_module_forward(net, w) : NULL;
    ok = out && ag_retain_grad(out) == AG_OK && ag_register_hook(out, watch_grad, "hook out") &&
         ag_backward(ag_sum(ag_mul(out, out), 0, NULL, false), NULL) == AG_OK;
    if (!ok) {
        fprintf(stderr, "m_hooks: %s\n", ag_last_error());
        return false;
    }
    static const char *const expected[] = {"pre Sequential",          "pre ReLU", "forward ReLU",
                                           "forward Sequential",      "hook out", "hook w (clamp)",
                                           "post-accumulate w (step)"};
    int n_expected = (int)(sizeof expected / sizeof expected[0]);
    ok = n_fired == n_expected;
    for (int i = 0; i < n_fired; i++) {
        bool same = i < n_expected && strcmp(fired[i], expected[i]) == 0;
        printf("%d. %-26s %s\n", i + 1, fired[i], same ? "ok" : "MISMATCH");
        ok = ok && same;
    }
    ok = check("out", out, (double[]){4, 0, 1}) && ok;
    ok = check("out.grad", ag_tensor_grad(out), (double[]){8, 0, 2}) && ok;
    ok = check("w", w, (double[]){1.5, -3, 0.1}) && ok;
    return ag_tensor_grad(w) == NULL && ok;
}

int main(void) {
    ag_scope *scope = ag_scope_begin();
    ag_tensor *w = ag_from_f64((double[]){2, -3, 0.5}, 1, (int64_t[]){3});
    ag_module *net = ag_sequential_new(1, (ag_module *[]){ag_relu_new()});
    bool ok = w && net && ag_set_requires_grad(w, true) == AG_OK && run(net, w);
    ag_module_free(net);
    ag_scope_end(scope);
    printf("%s\n", ok ? "all hooks fired in PyTorch's order with the expected values" : "MISMATCH");
    return ok ? 0 : 1;
}
