/* Loads the cube plugin and checks its op: values (float64, float32, a strided view),
 * the gradient against 3x², gradcheck and gradgradcheck. Exits non-zero on any failure.
 *
 *   cube_test path/to/libag_op_cube.so */
#include <stdio.h>
#include <ag/plugin.h>

static int failures;

/* Reports a failed check with the library's last error. */
static void check(int ok, const char *what) {
    printf("%s: %s\n", ok ? "ok  " : "FAIL", what);
    if (!ok) {
        fprintf(stderr, "  %s: %s\n", what, ag_last_error());
        failures++;
    }
}

/* The function gradcheck differentiates: the plugin op on inputs[0]. */
static ag_tensor *call_cube(ag_tensor *const *inputs, void *user) {
    const ag_op *op = *(const ag_op *const *)user;
    return ag_op_call1(op, 1, inputs, NULL);
}

/* True if the n float64 values of t equal want to within tol. */
static int values_are(const ag_tensor *t, const double *want, int n, double tol) {
    double got[16];
    if (!t || ag_numel(t) != n || n > 16 || ag_to_host(t, got, sizeof(double) * (size_t)n))
        return 0;
    for (int i = 0; i < n; i++)
        if (got[i] - want[i] > tol || want[i] - got[i] > tol) return 0;
    return 1;
}

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "libag_op_cube.so";
    if (ag_plugin_load(path) != AG_OK) {
        fprintf(stderr, "cube_test: %s\n", ag_last_error());
        return 1;
    }
    const ag_op *op = ag_op_find("cube::cube");
    if (!op) {
        fprintf(stderr, "cube_test: %s\n", ag_last_error());
        return 1;
    }
    const ag_plugin_op *decl = ag_op_plugin_decl(op);
    check(decl && decl->n_inputs == 1, "cube::cube is a plugin op with one input");

    ag_scope *scope = ag_scope_begin();
    const double xs[6] = {-2.0, -0.5, 0.0, 0.75, 1.5, 3.0};
    double cubes[6], squares3[6];
    for (int i = 0; i < 6; i++) {
        cubes[i] = xs[i] * xs[i] * xs[i];
        squares3[i] = 3.0 * xs[i] * xs[i];
    }

    /* Forward, float64 and float32 (these values are exact in both). */
    ag_tensor *x = ag_from_f64(xs, 2, (int64_t[]){2, 3});
    ag_tensor *y = ag_op_call1(op, 1, &x, NULL);
    check(values_are(y, cubes, 6, 0.0), "float64 forward is x^3");
    const float xf[6] = {-2.0f, -0.5f, 0.0f, 0.75f, 1.5f, 3.0f};
    ag_tensor *xf32 = ag_from_f32(xf, 2, (int64_t[]){2, 3});
    ag_tensor *yf32 = ag_op_call1(op, 1, &xf32, NULL);
    check(yf32 && ag_dtype_of(yf32) == AG_F32 &&
              values_are(ag_to_dtype(yf32, AG_F64), cubes, 6, 0.0),
          "float32 forward is x^3");

    /* A transposed (strided) input: y[j][i] = x[i][j]^3. */
    ag_tensor *xt = ag_transpose(x, 0, 1);
    const double cubes_t[6] = {cubes[0], cubes[3], cubes[1], cubes[4], cubes[2], cubes[5]};
    check(values_are(ag_op_call1(op, 1, &xt, NULL), cubes_t, 6, 0.0), "strided forward is x^3");

    /* An int64 input is refused by the op's schema, with an error. */
    ag_tensor *xi = ag_from_i64((int64_t[]){1, 2}, 1, (int64_t[]){2});
    check(!ag_op_call1(op, 1, &xi, NULL) && ag_last_status() != AG_OK, "int64 input is refused");
    ag_clear_error();

    /* Backward: d/dx sum(x^3) = 3x^2. */
    ag_tensor *leaf = ag_from_f64(xs, 1, (int64_t[]){6});
    ag_set_requires_grad(leaf, true);
    ag_tensor *s = ag_sum(ag_op_call1(op, 1, &leaf, NULL), 0, NULL, false);
    check(s && ag_backward(s, NULL) == AG_OK &&
              values_are(ag_tensor_grad(leaf), squares3, 6, 1e-12),
          "gradient is 3x^2");

    /* gradcheck and gradgradcheck (float64, PyTorch's tolerances). */
    ag_generator *gen = ag_generator_new(0);
    ag_tensor *r = ag_randn(gen, AG_F64, 2, (int64_t[]){3, 4});
    ag_generator_free(gen);
    ag_set_requires_grad(r, true);
    ag_gradcheck_options options = ag_gradcheck_defaults();
    check(ag_gradcheck(call_cube, &op, 1, &r, &options) == AG_OK, "gradcheck");
    check(ag_gradgradcheck(call_cube, &op, 1, &r, &options) == AG_OK, "gradgradcheck");
    ag_scope_end(scope);

    if (failures) fprintf(stderr, "cube_test: %d check(s) failed\n", failures);
    return failures ? 1 : 0;
}
