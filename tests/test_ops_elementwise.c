/* Elementwise ops (ops/elementwise.c): forward values against PyTorch (ordinary and special
 * values), gradients at non-differentiable points, gradcheck and gradgradcheck over many
 * shapes and layouts, comparisons, int64 arithmetic, dtype promotion, broadcasting errors
 * and NULL propagation.
 *
 * One table describes every op; the checks loop over it, so a new op needs one table row
 * (and its reference numbers), not a new test. Loops report every failing op/shape on
 * stderr before failing, because one run should show all broken ops at once. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "test_util.h"

static long n_checks; /* individual checks made, printed at the end */

/* ---- input values ----
 * Three fixed lists, one per input slot. They keep away from the points where an op is
 * not differentiable: no value near 0 (relu, abs, sign), none near the clamp bounds -0.5
 * and 0.6, and slot 0 never equals slot 1 (maximum/minimum ties: slot 0 values end in 5
 * in the second decimal, slot 1 values have one decimal). Slot 1 stays |x| >= 0.4 so it
 * can be a divisor. Ops defined only for positive inputs get |x| + 0.15. */
static const double k_values[3][12] = {
    {-1.75, -0.35, 0.25, 0.85, 1.45, -0.85, 2.05, -1.15, 0.45, -0.65, 1.25, -2.35},
    {-1.3, 0.7, 1.1, -0.6, -2.2, 0.4, 1.9, -0.9, 1.6, -1.6, 0.8, -1.2},
    {0.3, -1.4, 2.2, -0.7, 1.2, -2.1, 0.9, -0.5, 1.7, -1.9, 0.6, -1.1},
};

static double input_value(int slot, int64_t k, bool positive) {
    double x = k_values[slot][k % 12];
    return positive ? fabs(x) + 0.15 : x;
}

/* ---- the ops under test, as gradcheck functions ---- */

#define DEF_OP(fn_name, expr)                                                                      \
    static ag_tensor *fn_name(ag_tensor *const *in, void *user) {                                  \
        (void)user;                                                                                \
        return expr;                                                                               \
    }
DEF_OP(f_add, ag_add(in[0], in[1]))
DEF_OP(f_sub, ag_sub(in[0], in[1]))
DEF_OP(f_mul, ag_mul(in[0], in[1]))
DEF_OP(f_div, ag_div(in[0], in[1]))
DEF_OP(f_pow, ag_pow(in[0], in[1]))
DEF_OP(f_maximum, ag_maximum(in[0], in[1]))
DEF_OP(f_minimum, ag_minimum(in[0], in[1]))
DEF_OP(f_add_scalar, ag_add_scalar(in[0], 0.75))
DEF_OP(f_mul_scalar, ag_mul_scalar(in[0], -1.5))
DEF_OP(f_pow_scalar_3, ag_pow_scalar(in[0], 3))
DEF_OP(f_pow_scalar_m15, ag_pow_scalar(in[0], -1.5))
DEF_OP(f_pow_scalar_05, ag_pow_scalar(in[0], 0.5))
DEF_OP(f_neg, ag_neg(in[0]))
DEF_OP(f_exp, ag_exp(in[0]))
DEF_OP(f_log, ag_log(in[0]))
DEF_OP(f_sqrt, ag_sqrt(in[0]))
DEF_OP(f_rsqrt, ag_rsqrt(in[0]))
DEF_OP(f_abs, ag_abs(in[0]))
DEF_OP(f_sign, ag_sign(in[0]))
DEF_OP(f_sin, ag_sin(in[0]))
DEF_OP(f_cos, ag_cos(in[0]))
DEF_OP(f_tanh, ag_tanh(in[0]))
DEF_OP(f_erf, ag_erf(in[0]))
DEF_OP(f_sigmoid, ag_sigmoid(in[0]))
DEF_OP(f_relu, ag_relu(in[0]))
DEF_OP(f_silu, ag_silu(in[0]))
DEF_OP(f_gelu, ag_gelu(in[0], false))
DEF_OP(f_gelu_tanh, ag_gelu(in[0], true))
DEF_OP(f_clamp, ag_clamp(in[0], true, -0.5, true, 0.6))
DEF_OP(f_clamp_min, ag_clamp(in[0], true, -0.5, false, 0))
DEF_OP(f_clamp_max, ag_clamp(in[0], false, 0, true, 0.6))
/* The condition comes from input 0 so one table drives where too; its gradient w.r.t.
 * input 0 must then be zero, which gradcheck verifies as well. */
DEF_OP(f_where, ag_where(ag_gt(in[0], ag_zeros_like(in[0])), in[1], in[2]))
/* A round trip through the other float dtype keeps the result in the input's dtype. */
DEF_OP(f_to_dtype, ag_to_dtype(ag_to_dtype(in[0], ag_dtype_of(in[0]) == AG_F64 ? AG_F32 : AG_F64),
                               ag_dtype_of(in[0])))
DEF_OP(f_clone, ag_clone(in[0]))
DEF_OP(f_contiguous, ag_contiguous(in[0]))
/* int64-only variants (integral scalars and bounds). */
DEF_OP(f_add_scalar_2, ag_add_scalar(in[0], 2))
DEF_OP(f_mul_scalar_3, ag_mul_scalar(in[0], 3))
DEF_OP(f_clamp_i, ag_clamp(in[0], true, -5, true, 4))
DEF_OP(f_eq, ag_eq(in[0], in[1]))
DEF_OP(f_ne, ag_ne(in[0], in[1]))
DEF_OP(f_lt, ag_lt(in[0], in[1]))
DEF_OP(f_le, ag_le(in[0], in[1]))
DEF_OP(f_gt, ag_gt(in[0], in[1]))
DEF_OP(f_ge, ag_ge(in[0], in[1]))

/* The f32 round trip loses ~1e-7 relative: central differences need a wider step. */
static const ag_gradcheck_options k_loose = {1e-3, 1e-3, 1e-3};

typedef struct op_entry {
    const char *name;
    ag_gradcheck_fn fn;
    int arity;                        /* number of tensor inputs (1..3) */
    unsigned positive;                /* bit i: input i must be positive */
    bool nondiff;                     /* output never requires grad (sign) */
    const ag_gradcheck_options *opts; /* NULL: PyTorch's defaults */
    double expected[6];               /* fn on the reference inputs, row-major [2,3] */
} op_entry;

/* Reference inputs: slot 0 [2,3], slot 1 [3], slot 2 [2,1], values input_value(slot, k),
 * so binary and ternary references exercise broadcasting too. Expected values come from
 * PyTorch 1.13 in float64, e.g. torch.nn.functional.gelu(a, approximate='tanh') with
 * a = torch.tensor(k_values[0][:6], dtype=torch.float64).reshape(2, 3). One row per op:
 * clang-format would put one field per line. */
/* clang-format off */
static const op_entry k_ops[] = {
    {"add", f_add, 2, 0, false, NULL,
     {-3.05, 0.35, 1.35, -0.45000000000000007, 2.15, 0.2500000000000001}},
    {"sub", f_sub, 2, 0, false, NULL,
     {-0.44999999999999996, -1.0499999999999998, -0.8500000000000001, 2.15, 0.75,
      -1.9500000000000002}},
    {"mul", f_mul, 2, 0, false, NULL, {2.275, -0.24499999999999997, 0.275, -1.105, 1.015, -0.935}},
    {"div", f_div, 2, 0, false, NULL,
     {1.346153846153846, -0.5, 0.22727272727272727, -0.6538461538461539, 2.0714285714285716,
      -0.7727272727272726}},
    {"pow", f_pow, 2, 1, false, NULL,
     {0.4341305203224876, 0.6155722066724582, 0.36497741462219235, 1.0, 1.3895813857757493, 1.0}},
    {"maximum", f_maximum, 2, 0, false, NULL, {-1.3, 0.7, 1.1, 0.85, 1.45, 1.1}},
    {"minimum", f_minimum, 2, 0, false, NULL, {-1.75, -0.35, 0.25, -1.3, 0.7, -0.85}},
    {"add_scalar 0.75", f_add_scalar, 1, 0, false, NULL,
     {-1.0, 0.4, 1.0, 1.6, 2.2, -0.09999999999999998}},
    {"mul_scalar -1.5", f_mul_scalar, 1, 0, false, NULL,
     {2.625, 0.5249999999999999, -0.375, -1.275, -2.175, 1.275}},
    {"pow_scalar 3", f_pow_scalar_3, 1, 0, false, NULL,
     {-5.359375, -0.04287499999999999, 0.015625, 0.6141249999999999, 3.048625,
      -0.6141249999999999}},
    {"pow_scalar -1.5", f_pow_scalar_m15, 1, 1, false, NULL,
     {0.3818296053210588, 2.8284271247461903, 3.9528470752104736, 1.0, 0.4941058844013093, 1.0}},
    {"pow_scalar 0.5", f_pow_scalar_05, 1, 1, false, NULL,
     {1.378404875209022, 0.7071067811865476, 0.6324555320336759, 1.0, 1.2649110640673518, 1.0}},
    {"neg", f_neg, 1, 0, false, NULL, {1.75, 0.35, -0.25, -0.85, -1.45, 0.85}},
    {"exp", f_exp, 1, 0, false, NULL,
     {0.1737739434504451, 0.7046880897187134, 1.2840254166877414, 2.3396468519259908,
      4.263114515168817, 0.4274149319487267}},
    {"log", f_log, 1, 1, false, NULL,
     {0.6418538861723947, -0.6931471805599453, -0.916290731874155, 0.0, 0.47000362924573547, 0.0}},
    {"sqrt", f_sqrt, 1, 1, false, NULL,
     {1.378404875209022, 0.7071067811865476, 0.6324555320336759, 1.0, 1.2649110640673518, 1.0}},
    {"rsqrt", f_rsqrt, 1, 1, false, NULL,
     {0.7254762501100117, 1.414213562373095, 1.5811388300841895, 1.0, 0.7905694150420948, 1.0}},
    {"abs", f_abs, 1, 0, false, NULL, {1.75, 0.35, 0.25, 0.85, 1.45, 0.85}},
    {"sign", f_sign, 1, 0, true, NULL, {-1.0, -1.0, 1.0, 1.0, 1.0, -1.0}},
    {"sin", f_sin, 1, 0, false, NULL,
     {-0.9839859468739369, -0.34289780745545134, 0.24740395925452294, 0.7512804051402927,
      0.9927129910375885, -0.7512804051402927}},
    {"cos", f_cos, 1, 0, false, NULL,
     {-0.17824605564949209, 0.9393727128473789, 0.9689124217106447, 0.6599831458849822,
      0.12050276936736662, 0.6599831458849822}},
    {"tanh", f_tanh, 1, 0, false, NULL,
     {-0.9413755384972874, -0.3363755443363322, 0.24491866240370913, 0.6910694698329306,
      0.8956928738431645, -0.6910694698329306}},
    {"erf", f_erf, 1, 0, false, NULL,
     {-0.9866716712191824, -0.3793820535623103, 0.27632639016823696, 0.7706680576083526,
      0.9596950256374592, -0.7706680576083526}},
    {"sigmoid", f_sigmoid, 1, 0, false, NULL,
     {0.14804719803168948, 0.41338242108267, 0.5621765008857981, 0.7005671424739729,
      0.8099984339846871, 0.29943285752602705}},
    {"relu", f_relu, 1, 0, false, NULL, {0.0, 0.0, 0.25, 0.85, 1.45, 0.0}},
    {"silu", f_silu, 1, 0, false, NULL,
     {-0.25908259655545657, -0.14468384737893447, 0.14054412522144952, 0.5954820711028769,
      1.174497729277796, -0.254517928897123}},
    {"gelu", f_gelu, 1, 0, false, NULL,
     {-0.07010352451167995, -0.12710927208853331, 0.14967658142073093, 0.6819868383457115,
      1.3433825735660099, -0.1680131616542885}},
    {"gelu tanh", f_gelu_tanh, 1, 0, false, NULL,
     {-0.0702046176587487, -0.1271138039477433, 0.149675350701685, 0.6818865882996429,
      1.3431551866677907, -0.168113411700357}},
    {"clamp [-0.5, 0.6]", f_clamp, 1, 0, false, NULL, {-0.5, -0.35, 0.25, 0.6, 0.6, -0.5}},
    {"clamp min -0.5", f_clamp_min, 1, 0, false, NULL, {-0.5, -0.35, 0.25, 0.85, 1.45, -0.5}},
    {"clamp max 0.6", f_clamp_max, 1, 0, false, NULL, {-1.75, -0.35, 0.25, 0.6, 0.6, -0.85}},
    {"where", f_where, 3, 0, false, NULL, {0.3, 0.3, 1.1, -1.3, 0.7, -1.4}},
    /* to_dtype: x.float().double(); the float32 run compares within its tolerance. */
    {"to_dtype", f_to_dtype, 1, 0, false, &k_loose,
     {-1.75, -0.3499999940395355, 0.25, 0.8500000238418579, 1.4500000476837158,
      -0.8500000238418579}},
    {"clone", f_clone, 1, 0, false, NULL, {-1.75, -0.35, 0.25, 0.85, 1.45, -0.85}},
    {"contiguous", f_contiguous, 1, 0, false, NULL, {-1.75, -0.35, 0.25, 0.85, 1.45, -0.85}},
};
/* clang-format on */
#define N_OPS ((int)(sizeof k_ops / sizeof k_ops[0]))

/* Builds input `slot` of an op at the reference shapes in dtype dt. */
static ag_tensor *reference_input(const op_entry *op, int slot, ag_dtype dt) {
    static const int ndims[3] = {2, 1, 2};
    static const int64_t shapes[3][2] = {{2, 3}, {3}, {2, 1}};
    double v[6];
    for (int64_t k = 0; k < tu_numel(ndims[slot], shapes[slot]); k++)
        v[k] = input_value(slot, k, op->positive >> slot & 1);
    return tu_tensor(dt, ndims[slot], shapes[slot], v);
}

/* Reports one failed check on stderr and counts it. */
static void report(int *failures, const char *what, const char *op, const char *detail) {
    fprintf(stderr, "FAIL %s [%s]: %s\n", what, op, detail);
    (*failures)++;
}

/* Forward values of every op in dtype dt against the PyTorch numbers. */
static int check_forward_values(ag_dtype dt, double atol, double rtol) {
    int failures = 0;
    for (int i = 0; i < N_OPS; i++) {
        const op_entry *op = &k_ops[i];
        ag_scope *scope = ag_scope_begin();
        ag_tensor *in[3] = {NULL, NULL, NULL};
        for (int s = 0; s < op->arity; s++) in[s] = reference_input(op, s, dt);
        ag_tensor *out = op->fn(in, NULL);
        char msg[512] = "";
        n_checks += 2;
        if (!tu_values_are(out, 2, TU_SHAPE(2, 3), op->expected, atol, rtol, msg, sizeof msg, NULL))
            report(&failures, ag_dtype_name(dt), op->name, msg);
        else if (ag_dtype_of(out) != dt)
            report(&failures, ag_dtype_name(dt), op->name, "output dtype differs from input");
        ag_scope_end(scope);
    }
    return failures;
}

START_TEST(forward_values_match_pytorch) {
    int failures = check_forward_values(AG_F64, 1e-12, 1e-12);
    /* Inputs rounded to float32 move results by a few ulp of float32. */
    failures += check_forward_values(AG_F32, 1e-6, 1e-5);
    ck_assert_msg(failures == 0, "%d forward checks failed (details on stderr)", failures);
}
END_TEST

/* ---- special values ---- */

/* NaN, infinities, zero and values whose exp overflows, from PyTorch 1.13 (float64).
 * pow_scalar 0.5 is left out: PyTorch computes it as sqrt, so (-inf)^0.5 is NaN there, while
 * C's pow (and ag) give +inf. */
static const double k_special_inputs[7] = {NAN, INFINITY, -INFINITY, 0.0, 800.0, -800.0, 1.0};

typedef struct special_case {
    const char *name;
    ag_gradcheck_fn fn;
    double expected[7];
} special_case;

/* clang-format off */
static const special_case k_special[] = {
    {"neg", f_neg, {NAN, -INFINITY, INFINITY, -0.0, -800.0, 800.0, -1.0}},
    {"exp", f_exp, {NAN, INFINITY, 0.0, 1.0, INFINITY, 0.0, 2.718281828459045}},
    {"log", f_log, {NAN, INFINITY, NAN, -INFINITY, 6.684611727667927, NAN, 0.0}},
    {"sqrt", f_sqrt, {NAN, INFINITY, NAN, 0.0, 28.284271247461902, NAN, 1.0}},
    {"rsqrt", f_rsqrt, {NAN, 0.0, NAN, INFINITY, 0.035355339059327376, NAN, 1.0}},
    {"abs", f_abs, {NAN, INFINITY, INFINITY, 0.0, 800.0, 800.0, 1.0}},
    {"sin", f_sin, {NAN, NAN, NAN, 0.0, 0.8939696481970214, -0.8939696481970214, 0.8414709848078965}},
    {"cos", f_cos, {NAN, NAN, NAN, 1.0, -0.44812751321749233, -0.44812751321749233, 0.5403023058681398}},
    {"tanh", f_tanh, {NAN, 1.0, -1.0, 0.0, 1.0, -1.0, 0.7615941559557649}},
    {"erf", f_erf, {NAN, 1.0, -1.0, 0.0, 1.0, -1.0, 0.8427007929497149}},
    {"sigmoid", f_sigmoid, {NAN, 1.0, 0.0, 0.5, 1.0, 0.0, 0.7310585786300049}},
    {"relu", f_relu, {NAN, INFINITY, 0.0, 0.0, 800.0, 0.0, 1.0}},
    {"silu", f_silu, {NAN, INFINITY, NAN, 0.0, 800.0, -0.0, 0.7310585786300049}},
    {"gelu", f_gelu, {NAN, INFINITY, NAN, 0.0, 800.0, -0.0, 0.841344746068543}},
    {"gelu tanh", f_gelu_tanh, {NAN, INFINITY, NAN, 0.0, 800.0, -0.0, 0.8411919906082768}},
    {"clamp [-0.5, 0.6]", f_clamp, {NAN, 0.6, -0.5, 0.0, 0.6, -0.5, 0.6}},
    {"pow_scalar 3", f_pow_scalar_3, {NAN, INFINITY, -INFINITY, 0.0, 512000000.0, -512000000.0, 1.0}},
    {"pow_scalar -1.5", f_pow_scalar_m15, {NAN, 0.0, 0.0, INFINITY, 4.419417382415922e-05, NAN, 1.0}},
    {"add_scalar 0.75", f_add_scalar, {NAN, INFINITY, -INFINITY, 0.75, 800.75, -799.25, 1.75}},
    {"mul_scalar -1.5", f_mul_scalar, {NAN, -INFINITY, INFINITY, -0.0, -1200.0, 1200.0, -1.5}},
};
/* clang-format on */

START_TEST(special_values_match_pytorch) {
    int failures = 0;
    const ag_dtype dts[2] = {AG_F64, AG_F32};
    for (int d = 0; d < 2; d++)
        for (size_t i = 0; i < sizeof k_special / sizeof k_special[0]; i++) {
            ag_scope *scope = ag_scope_begin();
            ag_tensor *x = tu_tensor(dts[d], 1, TU_SHAPE(7), k_special_inputs);
            ag_tensor *out = k_special[i].fn(&x, NULL);
            char msg[512] = "";
            n_checks++;
            if (!tu_values_are(out, 1, TU_SHAPE(7), k_special[i].expected, 1e-12, 1e-6, msg,
                               sizeof msg, NULL))
                report(&failures, ag_dtype_name(dts[d]), k_special[i].name, msg);
            ag_scope_end(scope);
        }
    ck_assert_msg(failures == 0, "%d special-value checks failed (see stderr)", failures);
}
END_TEST

/* Binary ops at NaN, zero divisors and signed zeros. */
START_TEST(binary_special_values) {
    ag_scope *scope = ag_scope_begin();
    char msg[512] = "";
    ag_tensor *a = tu_tensor(AG_F64, 1, TU_SHAPE(3), TU_VALUES(1, NAN, NAN));
    ag_tensor *b = tu_tensor(AG_F64, 1, TU_SHAPE(3), TU_VALUES(NAN, 1, NAN));
    /* maximum/minimum propagate NaN from either side (torch.maximum, unlike fmax). */
    ck_assert_msg(tu_values_are(ag_maximum(a, b), 1, TU_SHAPE(3), TU_VALUES(NAN, NAN, NAN), 0, 0,
                                msg, sizeof msg, NULL),
                  "maximum: %s", msg);
    ck_assert_msg(tu_values_are(ag_minimum(a, b), 1, TU_SHAPE(3), TU_VALUES(NAN, NAN, NAN), 0, 0,
                                msg, sizeof msg, NULL),
                  "minimum: %s", msg);
    /* Division by zero is IEEE in float, and int64 / int64 is true division, so too. */
    const double num[3] = {1, -1, 0}, den[3] = {0, 0, 0}, want[3] = {INFINITY, -INFINITY, NAN};
    const ag_dtype dts[2] = {AG_F32, AG_I64};
    for (int d = 0; d < 2; d++) {
        ag_tensor *q =
            ag_div(tu_tensor(dts[d], 1, TU_SHAPE(3), num), tu_tensor(dts[d], 1, TU_SHAPE(3), den));
        ck_assert_msg(tu_values_are(q, 1, TU_SHAPE(3), want, 0, 0, msg, sizeof msg, NULL),
                      "%s division by zero: %s", ag_dtype_name(dts[d]), msg);
    }
    n_checks += 4;
    ag_scope_end(scope);
}
END_TEST

/* d(sum(fn(x)))/dx at one point, by backward with a ones gradient. */
static bool grad_at(ag_gradcheck_fn fn, int arity, const double *points, double *grads) {
    ag_scope *scope = ag_scope_begin();
    ag_tensor *in[3] = {NULL, NULL, NULL};
    for (int s = 0; s < arity; s++) {
        in[s] = tu_tensor(AG_F64, 1, TU_SHAPE(1), &points[s]);
        if (!in[s] || ag_set_requires_grad(in[s], true) != AG_OK) break;
    }
    ag_tensor *y = fn(in, NULL);
    bool ok = y && ag_backward(y, ag_ones_like(y)) == AG_OK;
    for (int s = 0; ok && s < arity; s++)
        ok = tu_read(ag_tensor_grad(in[s]), &grads[s], 1) == AG_OK;
    ag_scope_end(scope);
    return ok;
}

/* Where an op is not differentiable, PyTorch picks a one-sided value; gradient descent code
 * relies on those choices (relu'(0) = 0, ties split evenly). Numbers from PyTorch 1.13. */
typedef struct kink_case {
    const char *name;
    ag_gradcheck_fn fn;
    int arity;
    double at[2];
    double grad[2];
} kink_case;

static const kink_case k_kinks[] = {
    {"relu at 0", f_relu, 1, {0}, {0}},
    {"abs at 0", f_abs, 1, {0}, {0}},
    {"clamp at its min", f_clamp, 1, {-0.5}, {1}},
    {"clamp at its max", f_clamp, 1, {0.6}, {1}},
    {"sqrt at 0", f_sqrt, 1, {0}, {INFINITY}},
    {"maximum tie", f_maximum, 2, {1, 1}, {0.5, 0.5}},
    {"minimum tie", f_minimum, 2, {-2, -2}, {0.5, 0.5}},
    {"maximum without tie", f_maximum, 2, {2, 3}, {0, 1}},
    {"pow at base 0", f_pow, 2, {0, 2}, {0, 0}}, /* d/db 0^b is taken as 0, not 0 * log 0 */
    {"pow at base 0, exponent 0", f_pow, 2, {0, 0}, {0, 0}},
    {"pow", f_pow, 2, {2, 3}, {12, 5.545177444479562}},
};

START_TEST(gradients_at_kinks_follow_pytorch) {
    int failures = 0;
    for (size_t i = 0; i < sizeof k_kinks / sizeof k_kinks[0]; i++) {
        const kink_case *k = &k_kinks[i];
        double g[2] = {NAN, NAN};
        char msg[256];
        n_checks++;
        if (!grad_at(k->fn, k->arity, k->at, g)) {
            report(&failures, "kink", k->name, ag_last_error());
            ag_clear_error();
            continue;
        }
        for (int s = 0; s < k->arity; s++) {
            if (tu_close(g[s], k->grad[s], 1e-12, 1e-12)) continue;
            snprintf(msg, sizeof msg, "gradient of input %d is %.17g, expected %.17g", s, g[s],
                     k->grad[s]);
            report(&failures, "kink", k->name, msg);
        }
    }
    ck_assert_msg(failures == 0, "%d kink checks failed (see stderr)", failures);
}
END_TEST

/* ---- gradcheck over shapes and layouts ---- */

typedef enum layout {
    CONTIGUOUS, /* the shape as given */
    TRANSPOSED, /* a [b, a] tensor transposed to the given [a, b] */
    SLICED,     /* columns 1, 3, 5, ... of a [a, 2b + 1] tensor (offset and stride 2) */
    MIXED       /* input 0 transposed, the others contiguous (kernels special-case those) */
} layout;

typedef struct shape_case {
    const char *name;
    int min_arity; /* broadcasting cases need at least two inputs */
    layout layout;
    int ndim[3];
    int64_t shape[3][2];
    int out_ndim;
    int64_t out_shape[2];
} shape_case;

static const shape_case k_cases[] = {
    {"same [2,3]", 1, CONTIGUOUS, {2, 2, 2}, {{2, 3}, {2, 3}, {2, 3}}, 2, {2, 3}},
    {"[2,3] with [3]", 2, CONTIGUOUS, {2, 1, 1}, {{2, 3}, {3}, {3}}, 2, {2, 3}},
    {"[2,1] with [1,3]", 2, CONTIGUOUS, {2, 2, 2}, {{2, 1}, {1, 3}, {2, 1}}, 2, {2, 3}},
    {"[2,3] with 0-dim", 2, CONTIGUOUS, {2, 0, 0}, {{2, 3}, {0}, {0}}, 2, {2, 3}},
    {"transposed [2,3]", 1, TRANSPOSED, {2, 2, 2}, {{2, 3}, {2, 3}, {2, 3}}, 2, {2, 3}},
    {"sliced [2,3]", 1, SLICED, {2, 2, 2}, {{2, 3}, {2, 3}, {2, 3}}, 2, {2, 3}},
    {"transposed [2,3] with [2,3]", 2, MIXED, {2, 2, 2}, {{2, 3}, {2, 3}, {2, 3}}, 2, {2, 3}},
    {"0-dim", 1, CONTIGUOUS, {0, 0, 0}, {{0}, {0}, {0}}, 0, {0}},
    {"empty [0,3]", 1, CONTIGUOUS, {2, 2, 2}, {{0, 3}, {0, 3}, {0, 3}}, 2, {0, 3}},
    {"empty [0,3] with [3]", 2, CONTIGUOUS, {2, 1, 1}, {{0, 3}, {3}, {1}}, 2, {0, 3}},
};
#define N_CASES ((int)(sizeof k_cases / sizeof k_cases[0]))

/* A float64 leaf requiring grad for input `slot` of case c, laid out as c says. */
static ag_tensor *case_input(const shape_case *c, int slot, bool positive) {
    int ndim = c->ndim[slot];
    const int64_t *shape = c->shape[slot];
    layout lay = c->layout == MIXED ? (slot == 0 ? TRANSPOSED : CONTIGUOUS) : c->layout;
    int64_t base[2] = {ndim > 0 ? shape[0] : 1, ndim > 1 ? shape[1] : 1};
    if (lay == TRANSPOSED) base[0] = shape[1], base[1] = shape[0];
    if (lay == SLICED) base[1] = 2 * shape[1] + 1;
    double v[32];
    for (int64_t k = 0; k < tu_numel(ndim, base); k++) v[k] = input_value(slot, k, positive);
    ag_tensor *t = tu_tensor(AG_F64, ndim, base, v);
    /* The base does not require grad, so the view has no history: it is a leaf. */
    if (lay == TRANSPOSED) t = ag_transpose(t, 0, 1);
    if (lay == SLICED) t = ag_slice(t, 1, 1, base[1], 2);
    if (t && ag_set_requires_grad(t, true) != AG_OK) return NULL;
    return t;
}

/* Runs fn on contiguous copies of the inputs; a strided kernel must give the same bits. */
static ag_tensor *on_contiguous_copies(const op_entry *op, ag_tensor *const *in) {
    ag_tensor *copies[3] = {NULL, NULL, NULL};
    for (int s = 0; s < op->arity; s++) copies[s] = ag_clone(in[s]);
    return op->fn(copies, NULL);
}

/* All checks of one op on one shape case; returns the number of failures. */
static int check_op_on_case(const op_entry *op, const shape_case *c) {
    int failures = 0;
    const char *what = c->name;
    char msg[1024] = "";
    ag_scope *scope = ag_scope_begin();
    ag_tensor *in[3] = {NULL, NULL, NULL};
    for (int s = 0; s < op->arity; s++) in[s] = case_input(c, s, op->positive >> s & 1);

    ag_tensor *out = op->fn(in, NULL);
    n_checks++;
    if (!tu_shape_is(out, c->out_ndim, c->out_shape, msg, sizeof msg)) {
        report(&failures, what, op->name, msg);
        ag_scope_end(scope);
        return failures; /* the remaining checks would only repeat this failure */
    }
    n_checks++;
    if (ag_requires_grad(out) == op->nondiff)
        report(&failures, what, op->name,
               op->nondiff ? "output requires grad" : "output does not require grad");
    if (c->layout != CONTIGUOUS) {
        n_checks++;
        double diff = tu_max_abs_diff(out, on_contiguous_copies(op, in));
        if (diff != 0) {
            snprintf(msg, sizeof msg, "strided inputs differ from contiguous copies by %g", diff);
            report(&failures, what, op->name, msg);
        }
    }
    n_checks++;
    if (ag_gradcheck(op->fn, NULL, op->arity, in, op->opts) != AG_OK) {
        snprintf(msg, sizeof msg, "%s", ag_last_error()); /* names gradcheck already */
        report(&failures, what, op->name, msg);
    }
    n_checks++;
    if (ag_gradgradcheck(op->fn, NULL, op->arity, in, op->opts) != AG_OK) {
        snprintf(msg, sizeof msg, "gradgradcheck: %s", ag_last_error());
        report(&failures, what, op->name, msg);
    }
    ag_clear_error();
    ag_scope_end(scope);
    return failures;
}

START_TEST(gradcheck_and_gradgradcheck_over_shapes) {
    int failures = 0, combos = 0;
    for (int i = 0; i < N_OPS; i++)
        for (int c = 0; c < N_CASES; c++) {
            if (k_ops[i].arity < k_cases[c].min_arity) continue;
            combos++;
            failures += check_op_on_case(&k_ops[i], &k_cases[c]);
        }
    printf("gradcheck/gradgradcheck: %d op/shape combinations\n", combos);
    ck_assert_msg(failures == 0, "%d checks failed over %d op/shape combinations (see stderr)",
                  failures, combos);
}
END_TEST

/* The layouts really are strided (otherwise the test above proves less than it says). */
START_TEST(strided_cases_are_not_contiguous) {
    ag_scope *scope = ag_scope_begin();
    for (int c = 0; c < N_CASES; c++) {
        if (k_cases[c].layout == CONTIGUOUS) continue;
        ag_tensor *t = case_input(&k_cases[c], 0, false);
        ck_assert_msg(t, "%s: %s", k_cases[c].name, ag_last_error());
        ck_assert_msg(!ag_is_contiguous(t) && ag_is_leaf(t), "%s", k_cases[c].name);
        n_checks++;
    }
    ag_scope_end(scope);
}
END_TEST

/* ---- NULL propagation ---- */

/* Every op, given a NULL in any input slot, returns NULL and keeps the first error. */
START_TEST(null_input_keeps_first_error) {
    int failures = 0;
    ag_scope *scope = ag_scope_begin();
    for (int i = 0; i < N_OPS; i++) {
        const op_entry *op = &k_ops[i];
        for (int hole = 0; hole < op->arity; hole++) {
            ag_tensor *in[3] = {NULL, NULL, NULL};
            for (int s = 0; s < op->arity; s++)
                if (s != hole) in[s] = reference_input(op, s, AG_F64);
            ag_clear_error();
            /* The first error: a broadcast failure. */
            ck_assert_ptr_null(
                ag_add(ag_ones(AG_F32, 1, TU_SHAPE(2)), ag_ones(AG_F32, 1, TU_SHAPE(3))));
            char first[512];
            snprintf(first, sizeof first, "%s", ag_last_error());
            ag_tensor *out = op->fn(in, NULL);
            n_checks++;
            if (out || ag_last_status() != AG_ERR_SHAPE || strcmp(ag_last_error(), first) != 0) {
                char msg[1200];
                snprintf(msg, sizeof msg, "NULL input %d gave %s, status %s, message '%s'", hole,
                         out ? "a tensor" : "NULL", ag_status_name(ag_last_status()),
                         ag_last_error());
                report(&failures, "null", op->name, msg);
            }
        }
    }
    ag_clear_error();
    /* Without an earlier error, a NULL input is an error of its own. */
    ck_assert_ptr_null(ag_exp(NULL));
    ck_assert_int_eq(ag_last_status(), AG_ERR_INVALID_ARG);
    ck_assert_msg(strlen(ag_last_error()) > 0, "NULL input left no message");
    n_checks += 2;
    ag_clear_error();
    ag_scope_end(scope);
    ck_assert_msg(failures == 0, "%d NULL-propagation checks failed (see stderr)", failures);
}
END_TEST

/* ---- comparisons ---- */

typedef struct table_case {
    const char *name;
    ag_gradcheck_fn fn;
    ag_dtype out_dtype; /* AG_DTYPE_COUNT: the input dtype */
    double expected[6];
} table_case;

/* a = [[1, 2, 3], [4, 5, 6]] against b = [2, 2, 6] (broadcast). */
static const table_case k_compare[] = {
    {"eq", f_eq, AG_DTYPE_COUNT, {0, 1, 0, 0, 0, 1}},
    {"ne", f_ne, AG_DTYPE_COUNT, {1, 0, 1, 1, 1, 0}},
    {"lt", f_lt, AG_DTYPE_COUNT, {1, 0, 1, 0, 0, 0}},
    {"le", f_le, AG_DTYPE_COUNT, {1, 1, 1, 0, 0, 1}},
    {"gt", f_gt, AG_DTYPE_COUNT, {0, 0, 0, 1, 1, 0}},
    {"ge", f_ge, AG_DTYPE_COUNT, {0, 1, 0, 1, 1, 1}},
};

/* Runs each row of a table on (a, b) and checks values and dtype; returns failures. */
static int check_table(const char *what, const table_case *rows, int n_rows, ag_tensor *a,
                       ag_tensor *b, int ndim, const int64_t *shape) {
    int failures = 0;
    for (int r = 0; r < n_rows; r++) {
        ag_tensor *out = rows[r].fn((ag_tensor *[]){a, b}, NULL);
        ag_dtype want = rows[r].out_dtype == AG_DTYPE_COUNT ? ag_dtype_of(a) : rows[r].out_dtype;
        char msg[512] = "";
        n_checks += 3;
        if (!tu_values_are(out, ndim, shape, rows[r].expected, 0, 0, msg, sizeof msg, NULL))
            report(&failures, what, rows[r].name, msg);
        else if (ag_dtype_of(out) != want)
            report(&failures, what, rows[r].name, ag_dtype_name(ag_dtype_of(out)));
        else if (ag_requires_grad(out) || ag_grad_fn_name(out))
            report(&failures, what, rows[r].name, "output requires grad");
    }
    return failures;
}

START_TEST(comparisons) {
    int failures = 0;
    ag_scope *scope = ag_scope_begin();
    const double a_vals[] = {1, 2, 3, 4, 5, 6}, b_vals[] = {2, 2, 6};
    const ag_dtype dts[] = {AG_F32, AG_F64, AG_I64};
    for (int d = 0; d < 3; d++) {
        ag_tensor *a = tu_tensor(dts[d], 2, TU_SHAPE(2, 3), a_vals);
        ag_tensor *b = tu_tensor(dts[d], 1, TU_SHAPE(3), b_vals);
        /* Comparisons never carry gradients, even of inputs that require them. */
        if (dts[d] != AG_I64) ck_assert_int_eq(ag_set_requires_grad(a, true), AG_OK);
        failures += check_table(ag_dtype_name(dts[d]), k_compare, 6, a, b, 2, TU_SHAPE(2, 3));
    }
    /* Mixed int64/float32 compares in the promoted dtype. */
    ag_tensor *ai = tu_tensor(AG_I64, 2, TU_SHAPE(2, 3), a_vals);
    ag_tensor *bf = tu_tensor(AG_F32, 1, TU_SHAPE(3), b_vals);
    ag_tensor *mixed = ag_lt(ai, bf);
    char msg[512] = "";
    ck_assert_msg(
        tu_values_are(mixed, 2, TU_SHAPE(2, 3), k_compare[2].expected, 0, 0, msg, sizeof msg, NULL),
        "%s", msg);
    ck_assert_int_eq(ag_dtype_of(mixed), AG_F32);
    /* NaN compares unequal to everything, itself included. */
    ag_tensor *n = ag_full(AG_F32, 1, TU_SHAPE(2), NAN);
    ag_tensor *one = ag_ones(AG_F32, 1, TU_SHAPE(2));
    const double zeros[2] = {0, 0}, ones[2] = {1, 1};
    ck_assert(tu_values_are(ag_eq(n, n), 1, TU_SHAPE(2), zeros, 0, 0, msg, sizeof msg, NULL));
    ck_assert(tu_values_are(ag_ne(n, n), 1, TU_SHAPE(2), ones, 0, 0, msg, sizeof msg, NULL));
    ck_assert(tu_values_are(ag_lt(n, one), 1, TU_SHAPE(2), zeros, 0, 0, msg, sizeof msg, NULL));
    ck_assert(tu_values_are(ag_ge(n, one), 1, TU_SHAPE(2), zeros, 0, 0, msg, sizeof msg, NULL));
    n_checks += 6;
    ag_scope_end(scope);
    ck_assert_msg(failures == 0, "%d comparison checks failed (see stderr)", failures);
}
END_TEST

/* ---- int64 arithmetic and dtype promotion ---- */

/* a = [7, -7, 3], b = [2, 2, -4]; unary rows read only a. */
static const table_case k_int64[] = {
    {"add", f_add, AG_I64, {9, -5, -1}},
    {"sub", f_sub, AG_I64, {5, -9, 7}},
    {"mul", f_mul, AG_I64, {14, -14, -12}},
    {"div (true division)", f_div, AG_F32, {3.5, -3.5, -0.75}},
    {"maximum", f_maximum, AG_I64, {7, 2, 3}},
    {"minimum", f_minimum, AG_I64, {2, -7, -4}},
    {"neg", f_neg, AG_I64, {-7, 7, -3}},
    {"abs", f_abs, AG_I64, {7, 7, 3}},
    {"sign", f_sign, AG_I64, {1, -1, 1}},
    {"relu", f_relu, AG_I64, {7, 0, 3}},
    {"clamp [-5, 4]", f_clamp_i, AG_I64, {4, -5, 3}},
    {"add_scalar 2", f_add_scalar_2, AG_I64, {9, -5, 5}},
    {"mul_scalar 3", f_mul_scalar_3, AG_I64, {21, -21, 9}},
    {"clone", f_clone, AG_I64, {7, -7, 3}},
};

START_TEST(int64_arithmetic) {
    ag_scope *scope = ag_scope_begin();
    ag_tensor *a = tu_tensor(AG_I64, 1, TU_SHAPE(3), TU_VALUES(7, -7, 3));
    ag_tensor *b = tu_tensor(AG_I64, 1, TU_SHAPE(3), TU_VALUES(2, 2, -4));
    int failures = check_table("int64", k_int64, (int)(sizeof k_int64 / sizeof k_int64[0]), a, b, 1,
                               TU_SHAPE(3));
    /* Integer math must stay exact past 2^53, where a detour through double would round. */
    const int64_t big = (INT64_C(1) << 53) + 1;
    ag_tensor *sum = ag_add(ag_from_i64(&big, 0, NULL), ag_from_i64(&big, 0, NULL));
    int64_t got = 0;
    ck_assert_int_eq(ag_to_host(sum, &got, sizeof got), AG_OK);
    ck_assert_int_eq(got, 2 * big);
    /* float -> int64 truncates toward zero, as PyTorch. */
    char msg[512] = "";
    ag_tensor *f = tu_tensor(AG_F64, 1, TU_SHAPE(4), TU_VALUES(-1.75, 2.05, -0.35, 3.99));
    ck_assert_msg(tu_values_are(ag_to_dtype(f, AG_I64), 1, TU_SHAPE(4), TU_VALUES(-1, 2, 0, 3), 0,
                                0, msg, sizeof msg, NULL),
                  "to_dtype int64: %s", msg);
    /* An integer tensor cannot require grad. */
    ck_assert_int_eq(ag_set_requires_grad(a, true), AG_ERR_DTYPE);
    ag_clear_error();
    n_checks += 3;
    ag_scope_end(scope);
    ck_assert_msg(failures == 0, "%d int64 checks failed (see stderr)", failures);
}
END_TEST

typedef struct promotion_case {
    ag_dtype a, b;
    ag_gradcheck_fn fn;
    const char *name;
    ag_dtype want;
    double expected[3]; /* on a = [7, -7, 3], b = [2, 2, -4] */
} promotion_case;

static const promotion_case k_promotions[] = {
    {AG_I64, AG_F32, f_add, "int64 + float32", AG_F32, {9, -5, -1}},
    {AG_F32, AG_I64, f_mul, "float32 * int64", AG_F32, {14, -14, -12}},
    {AG_F32, AG_F64, f_add, "float32 + float64", AG_F64, {9, -5, -1}},
    {AG_I64, AG_F64, f_sub, "int64 - float64", AG_F64, {5, -9, 7}},
    {AG_I64, AG_I64, f_div, "int64 / int64", AG_F32, {3.5, -3.5, -0.75}},
    {AG_I64, AG_I64, f_add, "int64 + int64", AG_I64, {9, -5, -1}},
    {AG_F64, AG_I64, f_maximum, "maximum(float64, int64)", AG_F64, {7, 2, 3}},
    {AG_I64, AG_F32, f_where, "where(int64 cond, float32, float32)", AG_F32, {2, 2, -4}},
};

START_TEST(dtype_promotion) {
    int failures = 0;
    ag_scope *scope = ag_scope_begin();
    for (size_t i = 0; i < sizeof k_promotions / sizeof k_promotions[0]; i++) {
        const promotion_case *p = &k_promotions[i];
        ag_tensor *a = tu_tensor(p->a, 1, TU_SHAPE(3), TU_VALUES(7, -7, 3));
        ag_tensor *b = tu_tensor(p->b, 1, TU_SHAPE(3), TU_VALUES(2, 2, -4));
        /* where takes three inputs: cond (a), then b for both branches. */
        ag_tensor *out = p->fn((ag_tensor *[]){a, b, b}, NULL);
        char msg[512] = "";
        n_checks += 2;
        if (!tu_values_are(out, 1, TU_SHAPE(3), p->expected, 0, 0, msg, sizeof msg, NULL))
            report(&failures, "promotion", p->name, msg);
        else if (ag_dtype_of(out) != p->want)
            report(&failures, "promotion", p->name, ag_dtype_name(ag_dtype_of(out)));
    }
    /* Gradients flow back through the promotion, in each input's own dtype. */
    ag_tensor *x32 = tu_tensor(AG_F32, 1, TU_SHAPE(3), TU_VALUES(1, 2, 3));
    ag_tensor *x64 = tu_tensor(AG_F64, 1, TU_SHAPE(3), TU_VALUES(4, 5, 6));
    ag_tensor *k = tu_tensor(AG_I64, 1, TU_SHAPE(3), TU_VALUES(2, -1, 5));
    ck_assert_int_eq(ag_set_requires_grad(x32, true), AG_OK);
    ck_assert_int_eq(ag_set_requires_grad(x64, true), AG_OK);
    ag_tensor *y = ag_add(ag_mul(x32, k), x64); /* float32 * int64 -> float32, + float64 */
    ck_assert_msg(y && ag_dtype_of(y) == AG_F64, "%s", ag_last_error());
    ck_assert_int_eq(ag_backward(y, ag_ones(AG_F64, 1, TU_SHAPE(3))), AG_OK);
    char msg[512] = "";
    ck_assert_int_eq(ag_dtype_of(ag_tensor_grad(x32)), AG_F32);
    ck_assert_msg(tu_values_are(ag_tensor_grad(x32), 1, TU_SHAPE(3), TU_VALUES(2, -1, 5), 0, 0, msg,
                                sizeof msg, NULL),
                  "x32.grad: %s", msg);
    ck_assert_int_eq(ag_dtype_of(ag_tensor_grad(x64)), AG_F64);
    ck_assert_msg(tu_values_are(ag_tensor_grad(x64), 1, TU_SHAPE(3), TU_VALUES(1, 1, 1), 0, 0, msg,
                                sizeof msg, NULL),
                  "x64.grad: %s", msg);
    n_checks += 5;
    /* Scalar ops keep the tensor's dtype. */
    ck_assert_int_eq(ag_dtype_of(ag_mul_scalar(x32, 0.1)), AG_F32);
    ck_assert_int_eq(ag_dtype_of(ag_add_scalar(k, 1)), AG_I64);
    n_checks += 2;
    ag_scope_end(scope);
    ck_assert_msg(failures == 0, "%d promotion checks failed (see stderr)", failures);
}
END_TEST

/* ---- broadcasting errors ---- */

static void expect_shape_error(ag_tensor *out, const char *what) {
    ck_assert_msg(out == NULL, "%s: broadcast of mismatched shapes succeeded", what);
    ck_assert_msg(ag_last_status() == AG_ERR_SHAPE, "%s: status %s", what,
                  ag_status_name(ag_last_status()));
    ck_assert_msg(strstr(ag_last_error(), "must match the size"), "%s: message '%s'", what,
                  ag_last_error());
    n_checks += 3;
    ag_clear_error();
}

START_TEST(broadcast_errors) {
    ag_scope *scope = ag_scope_begin();
    ag_tensor *a = ag_ones(AG_F32, 2, TU_SHAPE(2, 3));
    ag_tensor *b = ag_ones(AG_F32, 1, TU_SHAPE(4));
    ag_clear_error();
    expect_shape_error(ag_add(a, b), "add [2,3] [4]");
    /* The message names both shapes so the user can find the culprit. */
    ag_add(a, b);
    ck_assert_msg(strstr(ag_last_error(), "[2, 3]") && strstr(ag_last_error(), "[4]"),
                  "message '%s' does not name the shapes", ag_last_error());
    ag_clear_error();
    expect_shape_error(
        ag_mul(ag_ones(AG_F64, 2, TU_SHAPE(2, 3)), ag_ones(AG_F64, 2, TU_SHAPE(3, 2))),
        "mul [2,3] [3,2]");
    expect_shape_error(ag_where(ag_ones(AG_F32, 2, TU_SHAPE(2, 3)), a, b), "where");
    expect_shape_error(ag_maximum(ag_ones(AG_I64, 1, TU_SHAPE(2)), ag_ones(AG_F32, 1, TU_SHAPE(3))),
                       "maximum int64 [2] float32 [3]");
    expect_shape_error(ag_add(ag_ones(AG_F32, 2, TU_SHAPE(0, 3)), ag_ones(AG_F32, 1, TU_SHAPE(2))),
                       "add [0,3] [2]");
    ag_scope_end(scope);
}
END_TEST

static Suite *elementwise_suite(void) {
    Suite *s = suite_create("ops_elementwise");
    TCase *tc = tcase_create("elementwise");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, forward_values_match_pytorch);
    tcase_add_test(tc, special_values_match_pytorch);
    tcase_add_test(tc, binary_special_values);
    tcase_add_test(tc, gradients_at_kinks_follow_pytorch);
    tcase_add_test(tc, strided_cases_are_not_contiguous);
    tcase_add_test(tc, gradcheck_and_gradgradcheck_over_shapes);
    tcase_add_test(tc, null_input_keeps_first_error);
    tcase_add_test(tc, comparisons);
    tcase_add_test(tc, int64_arithmetic);
    tcase_add_test(tc, dtype_promotion);
    tcase_add_test(tc, broadcast_errors);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *runner = srunner_create(elementwise_suite());
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    /* Counted only when Check runs the tests in this process (CK_FORK=no, as ctest does). */
    printf("ops_elementwise: %d ops, %d shape cases, %ld checks\n", N_OPS, N_CASES, n_checks);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
