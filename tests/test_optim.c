/* Optimizers, gradient clipping and lr schedulers against PyTorch 1.13 (the numbers come
 * from tests/reference/optim.py), plus what PyTorch's semantics imply: gradient
 * accumulation, zero_grad, parameters without gradients, state save/load, version counters,
 * the registered update ops and the error cases. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "ag/optim.h"
#include "test_util.h"
#include "../core/internal.h"

/* torch 1.13.0a0: tests/reference/optim.py */
static const double SGD_PLAIN[5][8] = {{0.575, -1.2625, 2.0625, 0.725, -0.45, 1.4625, 0.2875, -0.8},
                                       {0.5874999999999999, -1.3375, 2.0625, 0.7999999999999999,
                                        -0.4625, 1.525, 0.26249999999999996, -0.75},
                                       {0.5374999999999999, -1.3125, 2.0, 0.8124999999999999,
                                        -0.5375, 1.525, 0.33749999999999997, -0.7625},
                                       {0.5874999999999999, -1.35, 2.0375, 0.7624999999999998,
                                        -0.5125, 1.4625, 0.35, -0.8374999999999999},
                                       {0.575, -1.2875, 2.0125, 0.8124999999999999,
                                        -0.5499999999999999, 1.5, 0.3, -0.8124999999999999}};
static const double SGD_MOMENTUM[5][8] = {
    {0.575, -1.2625, 2.0625, 0.725, -0.45, 1.4625, 0.2875, -0.8},
    {0.651875, -1.33, 2.11875, 0.75875, -0.414375, 1.475625, 0.3025, -0.8075},
    {0.6835625, -1.372, 2.1225, 0.7985, -0.4385625, 1.4874375, 0.37224999999999997, -0.823625},
    {0.74958125, -1.4379250000000001, 2.154, 0.796775, -0.44158125000000004, 1.45119375,
     0.44439999999999996, -0.8943875},
    {0.799623125, -1.4503825000000001, 2.1635999999999997, 0.8327225, -0.47242312500000005,
     1.4466993750000001, 0.47183499999999995, -0.93932375}};
static const double SGD_NESTEROV[5][8] = {
    {0.56705, -1.260125, 2.05445, 0.7268249999999999, -0.45455, 1.4649, 0.283525, -0.794325},
    {0.6016296550000001, -1.3300908875, 2.071960995, 0.7854308575, -0.449230905, 1.50735159,
     0.27268982750000004, -0.7643701074999999},
    {0.5789787323105001, -1.3328705657012498, 2.0286768061045, 0.81314938572825, -0.5072531411855,
     1.515542205569, 0.34138967865525005, -0.7712859904032499},
    {0.6255775651618207, -1.3781767611081188, 2.0518024302606057, 0.7849065462066946,
     -0.5008940946688331, 1.4650836506751879, 0.37740138479966034, -0.838930287377487},
    {0.6312752031271557, -1.342464506574897, 2.0317677781206975, 0.8269311184521556,
     -0.5393089540267717, 1.482754448356758, 0.356007644340331, -0.8400992020943983}};
static const double SGD_WEIGHT_DECAY[5][8] = {
    {0.57, -1.25, 2.0425, 0.7175, -0.445, 1.4475, 0.285, -0.7925},
    {0.5768, -1.3125, 2.022075, 0.785325, -0.45305, 1.495525, 0.25715, -0.734575},
    {0.5210319999999999, -1.274375, 1.93935425, 0.7899717500000001, -0.5235195, 1.48056975,
     0.3295785, -0.73972925},
    {0.56582168, -1.29913125, 1.9574607075000001, 0.7320720325000001, -0.49328430500000003,
     1.4032640525, 0.338782715, -0.8073319575},
    {0.5476634632, -1.2236399375, 1.9128861004250002, 0.774751312175, -0.52585146195,
     1.4267314119749999, 0.28539488785, -0.7742586379249999}};
static const double ADAM[5][8] = {
    {0.5099999998666667, -1.2599999992000002, 2.00999999984, 0.7400000004, -0.4900000002,
     1.4900000002666667, 0.2599999997333333, -0.7599999998},
    {0.517833273203535, -1.268441251589346, 2.016700582229711, 0.7449418986445852,
     -0.48530531861677056, 1.4929356122573842, 0.2614452049851452, -0.7594736840210526},
    {0.5193786985323732, -1.2726433445667547, 2.0158419051020604, 0.7497132703616756,
     -0.48851788770928933, 1.4952048488246201, 0.2674970404144923, -0.7601859023099728},
    {0.5232888130449318, -1.2782272243910684, 2.0174661123176816, 0.7499459002179713,
     -0.4895146614707557, 1.4928299562767242, 0.2732268647002862, -0.7647891482923066},
    {0.5259171001853308, -1.2789270520953169, 2.017418287993344, 0.7526758715074475,
     -0.4923140170378785, 1.492946960785283, 0.274752657639089, -0.7672934101853908}};
static const double ADAM_WEIGHT_DECAY[5][8] = {
    {0.5199999714286122, -1.2499999999998612, 2.019999952941287, 0.7300000615382722,
     -0.48000003636357025, 1.4800000380951654, 0.2699999428573061, -0.7699999529412872},
    {0.5341676532299569, -1.265674115710681, 2.0246154997734505, 0.7387117935565439,
     -0.46970442383942235, 1.4812630292725153, 0.2701056167620965, -0.7648071296853327},
    {0.5334212538669133, -1.2680725237629846, 2.013950781127253, 0.7459750405149806,
     -0.4762352016051988, 1.4792494257031366, 0.2821924030968031, -0.7620136851071615},
    {0.5389686946783706, -1.2741737677344727, 2.008351472079401, 0.7421594969253169,
     -0.47670158990925987, 1.468333933772251, 0.29291717417845814, -0.7697215622628378},
    {0.5409170926978362, -1.2683289481132665, 1.9987457458878148, 0.7448798538853497,
     -0.4814130215891288, 1.4627371377119673, 0.2930807648690088, -0.7712829467993502}};
static const double ADAMW[5][8] = {
    {0.5094999998666667, -1.2587499992000002, 2.00799999984, 0.7392500004, -0.4895000002,
     1.4885000002666666, 0.25974999973333335, -0.7592499998},
    {0.5168237732036683, -1.265932501590146, 2.0126925822298705, 0.7434526486441851,
     -0.4843158186165706, 1.4899471122571175, 0.2609354549854119, -0.7579644340212526},
    {0.5178523747593028, -1.2688686620659644, 2.00982121251999, 0.7474805677126314,
     -0.4870440718904728, 1.4907264017120962, 0.2667263549597736, -0.7579186878761516},
    {0.5212446368971021, -1.2731836732282122, 2.0094355985230914, 0.7469657170012144,
     -0.48755380158004863, 1.4868607827624882, 0.2721894528906077, -0.7617640151706092},
    {0.523351679400604, -1.2726103172592325, 2.0073783386002306, 0.7489487225736895,
     -0.4898656033455914, 1.4854909264882845, 0.27344305637651994, -0.7635065130485228}};
static const double ADAMW_DEFAULTS[5][8] = {
    {0.5009949999866667, -1.2509874999200001, 2.000979999984, 0.7489925000400001, -0.49899500002,
     1.4989850000266667, 0.25099749997333337, -0.7509924999800001},
    {0.5017733173703537, -1.2518191152839355, 2.0016300484229714, 0.7494791999394582,
     -0.4985205419116769, 1.4992635713757383, 0.2511395105235148, -0.7509323584771056},
    {0.5019228421700639, -1.2522268063905235, 2.001524164409722, 0.7499488423191679,
     -0.4988368136155097, 1.4994755023967483, 0.2517421826713443, -0.7509960709824128},
    {0.5023088343928981, -1.252772672104891, 2.00166656988964, 0.7499646058163744,
     -0.4989315026235202, 1.4992230183869348, 0.25231264767809697, -0.7514488856199365},
    {0.5025666400185941, -1.252830127148595, 2.0016417707915077, 0.7502301032992638,
     -0.49920644886520626, 1.499219726607607, 0.2524627038455005, -0.7516917973203887}};
static const double LR_STEP[13] = {0.1,   0.1,   0.1,    0.05,   0.05,   0.05,   0.025,
                                   0.025, 0.025, 0.0125, 0.0125, 0.0125, 0.00625};
static const double LR_COSINE[13] = {
    0.1,    0.09757729755661011,   0.0905463412215599,  0.07959536998847742,  0.0657963412215599,
    0.0505, 0.03520365877844011,   0.02140463001152259, 0.010453658778440109, 0.0034227024433899004,
    0.001,  0.0034227024433899004, 0.01045365877844014};
static const double LR_LINEAR[13] = {0.025,
                                     0.043750000000000004,
                                     0.06250000000000001,
                                     0.08125000000000002,
                                     0.10000000000000002,
                                     0.10000000000000002,
                                     0.10000000000000002,
                                     0.10000000000000002,
                                     0.10000000000000002,
                                     0.10000000000000002,
                                     0.10000000000000002,
                                     0.10000000000000002,
                                     0.10000000000000002};
static const double LR_SEQUENTIAL[13] = {0.010000000000000002,
                                         0.04,
                                         0.07,
                                         0.1,
                                         0.09619397662556434,
                                         0.08535533905932738,
                                         0.0691341716182545,
                                         0.05,
                                         0.030865828381745515,
                                         0.014644660940672627,
                                         0.0038060233744356634,
                                         0.0,
                                         0.0038060233744356634};
static const double CLIP_L2[9] = {4.834769901453429,   0.3102525498259018, -0.4136700664345357,
                                  0.10341751660863392, 0.6205050996518036, -0.05170875830431696,
                                  0.20683503321726784, 0.5170875830431696, -0.1551262749129509};
static const double CLIP_L2_NO_CLIP[9] = {
    4.834769901453429, 1.5, -2.0, 0.5, 3.0, -0.25, 1.0, 2.5, -0.75};
static const double CLIP_INF[9] = {3.0,
                                   0.24999991666669444,
                                   -0.33333322222225925,
                                   0.08333330555556481,
                                   0.4999998333333889,
                                   -0.041666652777782406,
                                   0.16666661111112963,
                                   0.4166665277778241,
                                   -0.12499995833334722};
static const double CLIP_NAN[9] = {NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN};
static const double CLIP_INF_GRAD[9] = {INFINITY, 0.0, -0.0, 0.0, 0.0, -0.0, 0.0, NAN, -0.0};

/* `fmt` with its "%s" replaced by the default device ("cpu:0", "opencl:0"), in buf. */
static const char *on_default_device(const char *fmt, char *buf, size_t size) {
    char dev[64];
    ag_device_str(ag_default_device(), dev, sizeof dev);
    snprintf(buf, size, fmt, dev);
    return buf;
}

static void assert_error(ag_status st, ag_status expected, const char *words) {
    ck_assert_msg(st == expected, "status %s, expected %s (%s)", ag_status_name(st),
                  ag_status_name(expected), ag_last_error());
    ck_assert_msg(strstr(ag_last_error(), words), "message '%s' lacks '%s'", ag_last_error(),
                  words);
    ag_clear_error();
}

/* A leaf requiring grad with the given values. */
static ag_tensor *leaf(ag_dtype dtype, int ndim, const int64_t *shape, const double *values) {
    ag_tensor *t = tu_tensor(dtype, ndim, shape, values);
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(ag_set_requires_grad(t, true), AG_OK);
    return t;
}

/* Checks t's values against want with the given tolerances; what/step name the check. */
static void assert_close(const ag_tensor *t, const double *want, double atol, double rtol,
                         const char *what, int step) {
    char msg[512] = "";
    int64_t n = ag_numel(t);
    ck_assert_msg(
        tu_values_are(t, ag_ndim(t), ag_shape(t), want, atol, rtol, msg, sizeof msg, NULL),
        "%s, step %d (%lld elements): %s", what, step, (long long)n, msg);
}

/* ---- the PyTorch runs: a [3, 2] and a [2] parameter, fixed gradients ---- */

static const double W0[6] = {0.5, -1.25, 2.0, 0.75, -0.5, 1.5}, B0[2] = {0.25, -0.75};

/* Gradient of flattened element j (W's 6, then B's 2) at step k; exact in binary. */
static double grad_value(int k, int j) {
    return ((j * 7 + k * 5) % 13 - 6) * 0.125;
}

/* Sets the fixture gradients of step k on w and b. */
static void set_fixture_grads(ag_tensor *w, ag_tensor *b, int k) {
    double g[8];
    for (int j = 0; j < 8; j++) g[j] = grad_value(k, j);
    ag_dtype dt = ag_dtype_of(w);
    ck_assert_int_eq(ag_set_grad(w, tu_tensor(dt, 2, TU_SHAPE(3, 2), g)), AG_OK);
    ck_assert_int_eq(ag_set_grad(b, tu_tensor(dt, 1, TU_SHAPE(2), g + 6)), AG_OK);
}

typedef enum optim_kind { KIND_SGD, KIND_ADAM, KIND_ADAMW } optim_kind;

/* One optimizer setting of the reference script. */
typedef struct optim_case {
    const char *name;
    optim_kind kind;
    ag_sgd_options sgd;
    ag_adam_options adam;
    bool adam_defaults; /* use ag_adam(w)_defaults() instead of .adam */
    const double (*want)[8];
} optim_case;

static const optim_case CASES[] = {
    {.name = "SGD", .kind = KIND_SGD, .sgd = {.lr = 0.1}, .want = SGD_PLAIN},
    {.name = "SGD momentum",
     .kind = KIND_SGD,
     .sgd = {.lr = 0.1, .momentum = 0.9, .dampening = 0.25},
     .want = SGD_MOMENTUM},
    {.name = "SGD nesterov",
     .kind = KIND_SGD,
     .sgd = {.lr = 0.05, .momentum = 0.8, .weight_decay = 0.01, .nesterov = true},
     .want = SGD_NESTEROV},
    {.name = "SGD weight decay",
     .kind = KIND_SGD,
     .sgd = {.lr = 0.1, .weight_decay = 0.1},
     .want = SGD_WEIGHT_DECAY},
    {.name = "Adam",
     .kind = KIND_ADAM,
     .adam = {.lr = 0.01, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8},
     .want = ADAM},
    {.name = "Adam weight decay",
     .kind = KIND_ADAM,
     .adam = {.lr = 0.02, .beta1 = 0.8, .beta2 = 0.99, .eps = 1e-6, .weight_decay = 0.1},
     .want = ADAM_WEIGHT_DECAY},
    {.name = "AdamW",
     .kind = KIND_ADAMW,
     .adam = {.lr = 0.01, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.1},
     .want = ADAMW},
    {.name = "AdamW defaults", .kind = KIND_ADAMW, .adam_defaults = true, .want = ADAMW_DEFAULTS},
};
#define N_CASES ((int)(sizeof CASES / sizeof CASES[0]))

static ag_optimizer *new_optimizer(const optim_case *c, int n, const ag_named_tensor *params) {
    if (c->kind == KIND_SGD) return ag_sgd_new(n, params, &c->sgd);
    ag_adam_options o = c->adam;
    if (c->adam_defaults) o = c->kind == KIND_ADAM ? ag_adam_defaults() : ag_adamw_defaults();
    return c->kind == KIND_ADAM ? ag_adam_new(n, params, &o) : ag_adamw_new(n, params, &o);
}

/* Runs case i / 2 in float64 (even i: 1e-12 relative) or float32 (odd i) for 5 steps,
 * checking the parameters and their version counters after every step. */
START_TEST(optimizers_match_torch) {
    const optim_case *c = &CASES[_i / 2];
    const bool f32 = _i % 2;
    const ag_dtype dt = f32 ? AG_F32 : AG_F64;
    const double atol = f32 ? 1e-7 : 1e-14, rtol = f32 ? 1e-6 : 1e-12;
    ag_tensor *w = leaf(dt, 2, TU_SHAPE(3, 2), W0), *b = leaf(dt, 1, TU_SHAPE(2), B0);
    ag_named_tensor params[2] = {{"w", w}, {"b", b}};
    ag_optimizer *opt = new_optimizer(c, 2, params);
    ck_assert_msg(opt, "%s: %s", c->name, ag_last_error());
    for (int k = 0; k < 5; k++) {
        set_fixture_grads(w, b, k);
        uint64_t vw = ag_version_of(w), vb = ag_version_of(b);
        ck_assert_msg(ag_optimizer_step(opt) == AG_OK, "%s: %s", c->name, ag_last_error());
        ck_assert_uint_gt(ag_version_of(w), vw);
        ck_assert_uint_gt(ag_version_of(b), vb);
        ck_assert_msg(ag_is_leaf(w) && ag_requires_grad(w) && !ag_grad_fn_name(w), "%s", c->name);
        assert_close(w, c->want[k], atol, rtol, c->name, k + 1);
        assert_close(b, c->want[k] + 6, atol, rtol, c->name, k + 1);
    }
    ag_optimizer_free(opt);
}
END_TEST

/* ---- schedulers ---- */

static ag_scheduler *make_step_lr(ag_optimizer *o) {
    return ag_step_lr_new(o, 3, 0.5);
}
static ag_scheduler *make_cosine(ag_optimizer *o) {
    return ag_cosine_annealing_new(o, 10, 0.001);
}
static ag_scheduler *make_linear(ag_optimizer *o) {
    return ag_linear_lr_new(o, 0.25, 1.0, 4);
}
static ag_scheduler *make_sequential(ag_optimizer *o) {
    ag_scheduler *c[2] = {ag_linear_lr_new(o, 0.1, 1.0, 3), ag_cosine_annealing_new(o, 8, 0.0)};
    return ag_sequential_lr_new(o, 2, c, (const int64_t[]){3});
}

static const struct {
    const char *name;
    ag_scheduler *(*make)(ag_optimizer *);
    const double *want; /* lr after creation, then after each of 12 steps */
} SCHEDULERS[] = {
    {"StepLR", make_step_lr, LR_STEP},
    {"CosineAnnealingLR", make_cosine, LR_COSINE},
    {"LinearLR", make_linear, LR_LINEAR},
    {"SequentialLR", make_sequential, LR_SEQUENTIAL},
};

/* An SGD optimizer with lr 0.1 over one parameter. */
static ag_optimizer *plain_sgd(ag_tensor **param) {
    *param = leaf(AG_F64, 1, TU_SHAPE(2), TU_VALUES(0, 0));
    ag_sgd_options o = ag_sgd_defaults(0.1);
    ag_optimizer *opt = ag_sgd_new(1, &(ag_named_tensor){"p", *param}, &o);
    ck_assert_ptr_nonnull(opt);
    return opt;
}

START_TEST(schedulers_match_torch) {
    ag_tensor *p;
    ag_optimizer *opt = plain_sgd(&p);
    ag_scheduler *s = SCHEDULERS[_i].make(opt);
    ck_assert_msg(s, "%s: %s", SCHEDULERS[_i].name, ag_last_error());
    for (int k = 0; k <= 12; k++) {
        if (k > 0) ck_assert_int_eq(ag_scheduler_step(s), AG_OK);
        const double got = ag_optimizer_lr(opt), want = SCHEDULERS[_i].want[k];
        ck_assert_msg(tu_close(got, want, 1e-15, 1e-12), "%s epoch %d: lr %.17g, expected %.17g",
                      SCHEDULERS[_i].name, k, got, want);
    }
    ag_scheduler_free(s);
    ag_optimizer_free(opt);
}
END_TEST

START_TEST(scheduler_errors) {
    ag_tensor *p, *q;
    ag_optimizer *opt = plain_sgd(&p), *other = plain_sgd(&q);
    ck_assert_ptr_null(ag_step_lr_new(opt, 0, 0.5));
    assert_error(ag_last_status(), AG_ERR_INVALID_ARG, "step_size must be >= 1");
    ck_assert_ptr_null(ag_step_lr_new(NULL, 3, 0.5));
    assert_error(ag_last_status(), AG_ERR_INVALID_ARG, "optimizer is NULL");
    ck_assert_ptr_null(ag_cosine_annealing_new(opt, 0, 0));
    assert_error(ag_last_status(), AG_ERR_INVALID_ARG, "T_max must be >= 1");
    ck_assert_ptr_null(ag_linear_lr_new(opt, 1.5, 1.0, 4));
    assert_error(ag_last_status(), AG_ERR_INVALID_ARG, "Starting multiplicative factor");
    ck_assert_ptr_null(ag_linear_lr_new(opt, 0.5, -1.0, 4));
    assert_error(ag_last_status(), AG_ERR_INVALID_ARG, "Ending multiplicative factor");
    ck_assert_ptr_null(ag_linear_lr_new(opt, 0.5, 1.0, 0));
    assert_error(ag_last_status(), AG_ERR_INVALID_ARG, "total_iters must be >= 1");
    ck_assert_double_eq(ag_optimizer_lr(opt), 0.1); /* failed creations change nothing */

    ag_scheduler *a = make_step_lr(opt), *b = make_cosine(opt), *foreign = make_step_lr(other);
    ck_assert_ptr_null(
        ag_sequential_lr_new(opt, 2, (ag_scheduler *[]){a, foreign}, (const int64_t[]){3}));
    assert_error(ag_last_status(), AG_ERR_INVALID_ARG, "belong to the same optimizer");
    ck_assert_ptr_null(
        ag_sequential_lr_new(opt, 2, (ag_scheduler *[]){a, a}, (const int64_t[]){3}));
    assert_error(ag_last_status(), AG_ERR_INVALID_ARG, "scheduler 1 is scheduler 0 again");
    ck_assert_ptr_null(
        ag_sequential_lr_new(opt, 2, (ag_scheduler *[]){a, b}, (const int64_t[]){0}));
    assert_error(ag_last_status(), AG_ERR_INVALID_ARG,
                 "milestones must be positive and increasing");
    ck_assert_ptr_null(ag_sequential_lr_new(opt, 2, (ag_scheduler *[]){a, b}, NULL));
    assert_error(ag_last_status(), AG_ERR_INVALID_ARG, "n - 1 milestones");
    ag_scheduler *seq =
        ag_sequential_lr_new(opt, 2, (ag_scheduler *[]){a, b}, (const int64_t[]){2});
    ck_assert_ptr_nonnull(seq);
    ck_assert_ptr_null(ag_sequential_lr_new(opt, 1, (ag_scheduler *[]){seq}, NULL));
    assert_error(ag_last_status(), AG_ERR_INVALID_ARG, "belongs to one already");
    ck_assert_ptr_null(ag_sequential_lr_new(opt, 1, (ag_scheduler *[]){b}, NULL));
    assert_error(ag_last_status(), AG_ERR_INVALID_ARG, "belongs to one already");
    ag_scheduler_free(b); /* owned by seq: ignored */
    assert_error(ag_scheduler_step(NULL), AG_ERR_INVALID_ARG, "scheduler is NULL");
    ag_scheduler_free(seq);
    ag_scheduler_free(foreign);
    ag_optimizer_free(opt);
    ag_optimizer_free(other);
}
END_TEST

/* ---- gradient clipping ---- */

static const double CLIP_GRADS[8] = {1.5, -2.0, 0.5, 3.0, -0.25, 1.0, 2.5, -0.75};
static const struct {
    const char *name;
    double max_norm, norm_type;
    int replace_at; /* element replaced by replace_with, or -1 */
    double replace_with;
    const double *want; /* total norm, then the 8 clipped gradient elements */
} CLIPS[] = {
    {"L2", 1.0, 2.0, -1, 0, CLIP_L2},
    {"L2 without clipping", 100.0, 2.0, -1, 0, CLIP_L2_NO_CLIP},
    {"inf", 0.5, INFINITY, -1, 0, CLIP_INF},
    {"NaN gradient", 1.0, 2.0, 3, NAN, CLIP_NAN},
    {"inf gradient", 1.0, 2.0, 6, INFINITY, CLIP_INF_GRAD},
};

START_TEST(clip_grad_norm_matches_torch) {
    double g[8];
    memcpy(g, CLIP_GRADS, sizeof g);
    if (CLIPS[_i].replace_at >= 0) g[CLIPS[_i].replace_at] = CLIPS[_i].replace_with;
    ag_tensor *w = leaf(AG_F64, 2, TU_SHAPE(3, 2), TU_VALUES(0, 0, 0, 0, 0, 0));
    ag_tensor *b = leaf(AG_F64, 1, TU_SHAPE(2), TU_VALUES(0, 0));
    ag_tensor *c = leaf(AG_F64, 1, TU_SHAPE(2), TU_VALUES(0, 0));
    ck_assert_int_eq(ag_set_grad(w, tu_tensor(AG_F64, 2, TU_SHAPE(3, 2), g)), AG_OK);
    ck_assert_int_eq(ag_set_grad(b, tu_tensor(AG_F64, 1, TU_SHAPE(2), g + 6)), AG_OK);
    ag_named_tensor params[3] = {{"w", w}, {"b", b}, {"c", c}};
    double total = -1;
    ck_assert_int_eq(ag_clip_grad_norm(3, params, CLIPS[_i].max_norm, CLIPS[_i].norm_type, &total),
                     AG_OK);
    const double *want = CLIPS[_i].want;
    ck_assert_msg(tu_close(total, want[0], 1e-14, 1e-12), "%s: total %.17g, expected %.17g",
                  CLIPS[_i].name, total, want[0]);
    assert_close(ag_tensor_grad(w), want + 1, 1e-14, 1e-12, CLIPS[_i].name, 0);
    assert_close(ag_tensor_grad(b), want + 7, 1e-14, 1e-12, CLIPS[_i].name, 0);
    ck_assert_ptr_null(ag_tensor_grad(c));
}
END_TEST

START_TEST(clip_grad_norm_edge_cases) {
    ag_tensor *w = leaf(AG_F32, 1, TU_SHAPE(2), TU_VALUES(1, 2));
    ag_named_tensor p = {"w", w};
    double total = -1;
    ck_assert_int_eq(ag_clip_grad_norm(1, &p, 1.0, 2.0, &total), AG_OK); /* no gradients */
    ck_assert_double_eq(total, 0);
    ck_assert_int_eq(ag_set_grad(w, tu_tensor(AG_F32, 1, TU_SHAPE(2), TU_VALUES(3, 4))), AG_OK);
    ck_assert_int_eq(ag_clip_grad_norm(1, &p, 1.0, 2.0, &total), AG_OK);
    ck_assert(tu_close(total, 5, 0, 1e-7));
    assert_close(ag_tensor_grad(w), TU_VALUES(0.6, 0.8), 1e-6, 1e-6, "float32 clip", 0);
    assert_error(ag_clip_grad_norm(1, &p, 1.0, 0.0, &total), AG_ERR_INVALID_ARG,
                 "norm_type must be > 0");
    assert_error(ag_clip_grad_norm(1, &p, 1.0, NAN, &total), AG_ERR_INVALID_ARG,
                 "norm_type must be > 0");
    ag_named_tensor null_param = {"x", NULL};
    assert_error(ag_clip_grad_norm(1, &null_param, 1.0, 2.0, &total), AG_ERR_INVALID_ARG,
                 "parameter 0 ('x') is NULL");
}
END_TEST

/* ---- semantics ---- */

/* mean((x @ w^T + b - y)^2) over the rows [start, end) of x and y. */
static ag_tensor *mse_rows(ag_tensor *x, ag_tensor *y, ag_tensor *w, ag_tensor *b, int64_t start,
                           int64_t end) {
    ag_tensor *pred = ag_add(ag_matmul(ag_slice(x, 0, start, end, 1), ag_transpose(w, 0, 1)), b);
    ag_tensor *diff = ag_sub(pred, ag_slice(y, 0, start, end, 1));
    return ag_mean(ag_mul(diff, diff), 0, NULL, false);
}

/* k = 4 micro-batches with loss / 4 accumulate the gradient of the whole batch, so one step
 * after them equals one step on the whole batch; twice, with zero_grad between. */
START_TEST(gradient_accumulation_equals_full_batch) {
    double xv[24], yv[16], wv[6];
    for (int i = 0; i < 24; i++) xv[i] = sin(0.7 * i + 0.3);
    for (int i = 0; i < 16; i++) yv[i] = cos(1.3 * i);
    for (int i = 0; i < 6; i++) wv[i] = 0.25 * i - 0.6;
    ag_tensor *x = tu_tensor(AG_F64, 2, TU_SHAPE(8, 3), xv);
    ag_tensor *y = tu_tensor(AG_F64, 2, TU_SHAPE(8, 2), yv);
    ag_tensor *w[2], *b[2];
    ag_optimizer *opt[2];
    ag_sgd_options o = {.lr = 0.1, .momentum = 0.9, .weight_decay = 0.01};
    for (int m = 0; m < 2; m++) {
        w[m] = leaf(AG_F64, 2, TU_SHAPE(2, 3), wv);
        b[m] = leaf(AG_F64, 1, TU_SHAPE(2), TU_VALUES(0.1, -0.2));
        opt[m] = ag_sgd_new(2, (ag_named_tensor[]){{"w", w[m]}, {"b", b[m]}}, &o);
        ck_assert_ptr_nonnull(opt[m]);
    }
    for (int round = 0; round < 2; round++) {
        for (int j = 0; j < 4; j++) {
            ag_tensor *loss = ag_mul_scalar(mse_rows(x, y, w[0], b[0], 2 * j, 2 * j + 2), 0.25);
            ck_assert_int_eq(ag_backward(loss, NULL), AG_OK);
        }
        ck_assert_int_eq(ag_backward(mse_rows(x, y, w[1], b[1], 0, 8), NULL), AG_OK);
        ck_assert_double_lt(tu_max_abs_diff(ag_tensor_grad(w[0]), ag_tensor_grad(w[1])), 1e-12);
        ck_assert_double_lt(tu_max_abs_diff(ag_tensor_grad(b[0]), ag_tensor_grad(b[1])), 1e-12);
        for (int m = 0; m < 2; m++) {
            ck_assert_int_eq(ag_optimizer_step(opt[m]), AG_OK);
            ck_assert_int_eq(ag_optimizer_zero_grad(opt[m], true), AG_OK);
            ck_assert_ptr_null(ag_tensor_grad(w[m]));
            ck_assert_ptr_null(ag_tensor_grad(b[m]));
        }
        ck_assert_double_lt(tu_max_abs_diff(w[0], w[1]), 1e-12);
        ck_assert_double_lt(tu_max_abs_diff(b[0], b[1]), 1e-12);
    }
    for (int m = 0; m < 2; m++) ag_optimizer_free(opt[m]);
}
END_TEST

START_TEST(zero_grad_fills_or_drops) {
    ag_tensor *x = leaf(AG_F64, 1, TU_SHAPE(3), TU_VALUES(1, 2, 3));
    ag_sgd_options o = ag_sgd_defaults(0.1);
    ag_optimizer *opt = ag_sgd_new(1, &(ag_named_tensor){"x", x}, &o);
    ck_assert_int_eq(ag_optimizer_zero_grad(opt, false), AG_OK); /* no grad: nothing to do */
    ck_assert_ptr_null(ag_tensor_grad(x));
    ck_assert_int_eq(ag_backward(ag_sum(ag_mul(x, x), 0, NULL, false), NULL), AG_OK);
    ag_tensor *g = ag_tensor_grad(x);
    uint64_t v = ag_version_of(g);
    ck_assert_int_eq(ag_optimizer_zero_grad(opt, false), AG_OK);
    ck_assert_ptr_eq(ag_tensor_grad(x), g); /* filled in place */
    ck_assert_uint_gt(ag_version_of(g), v);
    assert_close(g, TU_VALUES(0, 0, 0), 0, 0, "zero-filled grad", 0);
    /* A gradient with history (create_graph) is detached, as PyTorch does. */
    ck_assert_int_eq(
        ag_backward_ex(ag_sum(ag_mul(ag_mul(x, x), x), 0, NULL, false), NULL, false, true), AG_OK);
    ck_assert(ag_requires_grad(ag_tensor_grad(x)));
    ck_assert_int_eq(ag_optimizer_zero_grad(opt, false), AG_OK);
    ck_assert(!ag_requires_grad(ag_tensor_grad(x)));
    assert_close(ag_tensor_grad(x), TU_VALUES(0, 0, 0), 0, 0, "detached zero grad", 0);
    ck_assert_int_eq(ag_optimizer_zero_grad(opt, true), AG_OK);
    ck_assert_ptr_null(ag_tensor_grad(x));
    assert_error(ag_optimizer_zero_grad(NULL, true), AG_ERR_INVALID_ARG, "optimizer is NULL");
    ag_optimizer_free(opt);
}
END_TEST

/* A parameter without .grad is skipped: untouched, no version bump, no state. */
START_TEST(parameter_without_grad_is_untouched) {
    ag_tensor *a = leaf(AG_F64, 1, TU_SHAPE(2), TU_VALUES(1, 2));
    ag_tensor *frozen = leaf(AG_F64, 1, TU_SHAPE(2), TU_VALUES(3, 4));
    ag_adam_options o = ag_adamw_defaults();
    ag_optimizer *opt = ag_adamw_new(2, (ag_named_tensor[]){{"a", a}, {"frozen", frozen}}, &o);
    ck_assert_int_eq(ag_set_grad(a, tu_tensor(AG_F64, 1, TU_SHAPE(2), TU_VALUES(1, -1))), AG_OK);
    uint64_t v = ag_version_of(frozen);
    ck_assert_int_eq(ag_optimizer_step(opt), AG_OK);
    ck_assert_int_eq(ag_optimizer_step(opt), AG_OK);
    assert_close(frozen, TU_VALUES(3, 4), 0, 0, "frozen parameter", 2);
    ck_assert_uint_eq(ag_version_of(frozen), v);
    ag_named_tensor st[8];
    ck_assert_int_eq(ag_optimizer_state(opt, st, 8), 3);
    for (int i = 0; i < 3; i++) ck_assert_msg(st[i].name[0] == '0', "%s", st[i].name);
    ag_optimizer_free(opt);
}
END_TEST

START_TEST(lr_can_be_set) {
    ag_tensor *p;
    ag_optimizer *opt = plain_sgd(&p);
    ck_assert_double_eq(ag_optimizer_lr(opt), 0.1);
    ag_optimizer_set_lr(opt, 0.5);
    ck_assert_double_eq(ag_optimizer_lr(opt), 0.5);
    ck_assert_int_eq(ag_set_grad(p, tu_tensor(AG_F64, 1, TU_SHAPE(2), TU_VALUES(1, -2))), AG_OK);
    ck_assert_int_eq(ag_optimizer_step(opt), AG_OK);
    assert_close(p, TU_VALUES(-0.5, 1), 0, 0, "SGD with lr 0.5", 1);
    ag_optimizer_free(opt);
}
END_TEST

/* Steps opt with the fixture gradients of steps [from, to). */
static void run_steps(ag_optimizer *opt, ag_tensor *w, ag_tensor *b, int from, int to) {
    for (int k = from; k < to; k++) {
        set_fixture_grads(w, b, k);
        ck_assert_int_eq(ag_optimizer_step(opt), AG_OK);
    }
}

/* State names and step counts; a state copied into a fresh optimizer continues the run
 * exactly (5 steps in one = 3 steps, save, load, 2 steps in another). */
START_TEST(state_round_trip) {
    const optim_case *c = &CASES[_i];
    ag_tensor *w = leaf(AG_F64, 2, TU_SHAPE(3, 2), W0), *b = leaf(AG_F64, 1, TU_SHAPE(2), B0);
    ag_optimizer *opt = new_optimizer(c, 2, (ag_named_tensor[]){{"w", w}, {"b", b}});
    ck_assert_int_eq(ag_optimizer_state(opt, NULL, 0), 0); /* no step yet: no state */
    run_steps(opt, w, b, 0, 3);
    ag_named_tensor st[8];
    const int n = ag_optimizer_state(opt, st, 8);
    if (c->kind == KIND_SGD && c->sgd.momentum == 0) {
        ck_assert_int_eq(n, 0);
    } else if (c->kind == KIND_SGD) {
        ck_assert_int_eq(n, 2);
        ck_assert_str_eq(st[0].name, "0.momentum_buffer");
        ck_assert_str_eq(st[1].name, "1.momentum_buffer");
    } else {
        static const char *const names[] = {"0.step", "0.exp_avg", "0.exp_avg_sq",
                                            "1.step", "1.exp_avg", "1.exp_avg_sq"};
        ck_assert_int_eq(n, 6);
        for (int i = 0; i < 6; i++) ck_assert_str_eq(st[i].name, names[i]);
        ck_assert_int_eq(ag_ndim(st[0].tensor), 0);
        ck_assert_int_eq(ag_dtype_of(st[0].tensor), AG_F64);
        double steps;
        ck_assert_int_eq(ag_item(st[3].tensor, &steps), AG_OK);
        ck_assert_double_eq(steps, 3);
    }
    /* A second optimizer over copies of the parameters takes over. */
    ag_tensor *w2 = leaf(AG_F64, 2, TU_SHAPE(3, 2), c->want[2]);
    ag_tensor *b2 = leaf(AG_F64, 1, TU_SHAPE(2), c->want[2] + 6);
    ag_optimizer *opt2 = new_optimizer(c, 2, (ag_named_tensor[]){{"w", w2}, {"b", b2}});
    ck_assert_msg(ag_optimizer_load_state(opt2, n, st) == AG_OK, "%s", ag_last_error());
    ck_assert_int_eq(ag_optimizer_state(opt2, NULL, 0), n);
    run_steps(opt, w, b, 3, 5);
    run_steps(opt2, w2, b2, 3, 5);
    ck_assert_double_lt(tu_max_abs_diff(w, w2), 1e-12);
    ck_assert_double_lt(tu_max_abs_diff(b, b2), 1e-12);
    assert_close(w2, c->want[4], 1e-14, 1e-12, c->name, 5);
    ag_optimizer_free(opt);
    ag_optimizer_free(opt2);
}
END_TEST

START_TEST(load_state_errors) {
    ag_tensor *w = leaf(AG_F64, 2, TU_SHAPE(3, 2), W0), *b = leaf(AG_F64, 1, TU_SHAPE(2), B0);
    ag_adam_options o = ag_adam_defaults();
    ag_optimizer *opt = ag_adam_new(2, (ag_named_tensor[]){{"w", w}, {"b", b}}, &o);
    ag_tensor *m = ag_zeros(AG_F64, 2, TU_SHAPE(3, 2)), *mb = ag_zeros(AG_F64, 1, TU_SHAPE(2));
    ag_tensor *one = ag_scalar(AG_F64, 1);
    run_steps(opt, w, b, 0, 1);
    char shape_words[256];
    const struct {
        const char *name;
        int tensor; /* 0: [3, 2] zeros, 1: [2] zeros, 2: step 1 */
        ag_status status;
        const char *words;
    } bad[] = {
        {"0.exp_avgs", 0, AG_ERR_INVALID_ARG, "unknown state name '0.exp_avgs' for Adam"},
        {"2.exp_avg", 0, AG_ERR_INVALID_ARG, "unknown state name '2.exp_avg'"},
        {"x.step", 2, AG_ERR_INVALID_ARG, "unknown state name 'x.step'"},
        {"0.momentum_buffer", 0, AG_ERR_INVALID_ARG, "unknown state name"},
        {"0.exp_avg", 1, AG_ERR_SHAPE,
         on_default_device("'0.exp_avg' is float64[2] on %s but parameter 0 ('w') "
                           "is float64[3, 2]",
                           shape_words, sizeof shape_words)},
        {"0.step", 1, AG_ERR_INVALID_ARG, "'0.step' must be a 0-dim tensor"},
    };
    ag_tensor *tensors[3] = {m, mb, one};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ag_named_tensor e = {bad[i].name, tensors[bad[i].tensor]};
        assert_error(ag_optimizer_load_state(opt, 1, &e), bad[i].status, bad[i].words);
    }
    assert_error(
        ag_optimizer_load_state(opt, 1, &(ag_named_tensor){"0.step", ag_scalar(AG_F64, 2.5)}),
        AG_ERR_INVALID_ARG, "whole number of steps");
    assert_error(
        ag_optimizer_load_state(opt, 2, (ag_named_tensor[]){{"0.step", one}, {"0.step", one}}),
        AG_ERR_INVALID_ARG, "state '0.step' is given twice");
    assert_error(
        ag_optimizer_load_state(opt, 2, (ag_named_tensor[]){{"1.step", one}, {"1.exp_avg", mb}}),
        AG_ERR_INVALID_ARG, "the state of parameter 1 ('b') lacks '1.exp_avg_sq'");
    assert_error(ag_optimizer_load_state(opt, 1, &(ag_named_tensor){"0.step", NULL}),
                 AG_ERR_INVALID_ARG, "entry 0 ('0.step') is NULL");
    /* Failed loads left the state alone; an empty load clears it, as in PyTorch. */
    ck_assert_int_eq(ag_optimizer_state(opt, NULL, 0), 6);
    ck_assert_int_eq(ag_optimizer_load_state(opt, 0, NULL), AG_OK);
    ck_assert_int_eq(ag_optimizer_state(opt, NULL, 0), 0);
    ag_optimizer_free(opt);
}
END_TEST

START_TEST(construction_errors) {
    ag_tensor *w = leaf(AG_F64, 1, TU_SHAPE(2), TU_VALUES(1, 2));
    ag_named_tensor p = {"w", w};
    static const struct {
        ag_sgd_options o;
        const char *words;
    } sgd[] = {
        {{.lr = -0.1}, "Invalid learning rate: -0.1"},
        {{.lr = NAN}, "Invalid learning rate"},
        {{.lr = 0.1, .momentum = -0.5}, "Invalid momentum value: -0.5"},
        {{.lr = 0.1, .weight_decay = -1}, "Invalid weight_decay value: -1"},
        {{.lr = 0.1, .nesterov = true}, "Nesterov momentum requires a momentum and zero dampening"},
        {{.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .nesterov = true},
         "Nesterov momentum requires a momentum and zero dampening"},
    };
    for (size_t i = 0; i < sizeof sgd / sizeof sgd[0]; i++) {
        ck_assert_ptr_null(ag_sgd_new(1, &p, &sgd[i].o));
        assert_error(ag_last_status(), AG_ERR_INVALID_ARG, sgd[i].words);
    }
    static const struct {
        ag_adam_options o;
        const char *words;
    } adam[] = {
        {{.lr = -1, .beta1 = 0.9, .beta2 = 0.999}, "Invalid learning rate: -1"},
        {{.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = -1e-8}, "Invalid epsilon value"},
        {{.lr = 1e-3, .beta1 = 1.0, .beta2 = 0.999}, "Invalid beta parameter at index 0: 1"},
        {{.lr = 1e-3, .beta1 = 0.9, .beta2 = -0.1}, "Invalid beta parameter at index 1: -0.1"},
        {{.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .weight_decay = -0.01},
         "Invalid weight_decay value: -0.01"},
    };
    for (size_t i = 0; i < sizeof adam / sizeof adam[0]; i++) {
        ck_assert_ptr_null(ag_adam_new(1, &p, &adam[i].o));
        assert_error(ag_last_status(), AG_ERR_INVALID_ARG, adam[i].words);
        ck_assert_ptr_null(ag_adamw_new(1, &p, &adam[i].o));
        assert_error(ag_last_status(), AG_ERR_INVALID_ARG, adam[i].words);
    }
    ag_sgd_options o = ag_sgd_defaults(0.1);
    ck_assert_ptr_null(ag_sgd_new(1, &p, NULL));
    assert_error(ag_last_status(), AG_ERR_INVALID_ARG, "options is NULL");
    ck_assert_ptr_null(ag_sgd_new(0, &p, &o));
    assert_error(ag_last_status(), AG_ERR_INVALID_ARG, "optimizer got an empty parameter list");
    ck_assert_ptr_null(ag_sgd_new(1, &(ag_named_tensor){"y", ag_mul_scalar(w, 2)}, &o));
    assert_error(ag_last_status(), AG_ERR_INVALID_ARG,
                 "can't optimize a non-leaf Tensor: parameter 0 ('y')");
    ck_assert_ptr_null(ag_sgd_new(
        1, &(ag_named_tensor){"i", tu_tensor(AG_I64, 1, TU_SHAPE(2), TU_VALUES(1, 2))}, &o));
    assert_error(ag_last_status(), AG_ERR_DTYPE, "parameter 0 ('i') is int64[2]");
    ck_assert_ptr_null(ag_sgd_new(2, (ag_named_tensor[]){{"w", w}, {"z", NULL}}, &o));
    assert_error(ag_last_status(), AG_ERR_INVALID_ARG, "parameter 1 ('z') is NULL");
    ck_assert_ptr_null(ag_sgd_new(2, (ag_named_tensor[]){{"w", w}, {"again", w}}, &o));
    assert_error(ag_last_status(), AG_ERR_INVALID_ARG, "parameter 1 ('again') is parameter 0");
    ag_tensor *e = ag_detach(ag_expand(ag_scalar(AG_F64, 1), 1, TU_SHAPE(3)));
    ck_assert_int_eq(ag_set_requires_grad(e, true), AG_OK);
    ck_assert_ptr_null(ag_sgd_new(1, &(ag_named_tensor){"e", e}, &o));
    assert_error(ag_last_status(), AG_ERR_INVALID_ARG, "overlapping memory");
}
END_TEST

/* A gradient on another device never reaches the optimizer: ag_set_grad refuses it (as
 * PyTorch's "assigned grad has data located on a different device"), and the parameters
 * keep their gradients. */
START_TEST(step_rejects_gradient_on_other_device) {
    ag_device cpu1;
    ck_assert_int_eq(ag_device_parse("cpu:1", &cpu1), AG_OK);
    ag_tensor *w = leaf(AG_F64, 2, TU_SHAPE(3, 2), W0), *b = leaf(AG_F64, 1, TU_SHAPE(2), B0);
    ag_sgd_options o = ag_sgd_defaults(0.1);
    ag_optimizer *opt = ag_sgd_new(2, (ag_named_tensor[]){{"w", w}, {"0.bias", b}}, &o);
    set_fixture_grads(w, b, 0);
    ag_tensor *kept = ag_tensor_grad(b);
    assert_error(ag_set_grad(b, ag_to_device(kept, cpu1)), AG_ERR_DEVICE, "on cpu:1");
    ck_assert_ptr_eq(ag_tensor_grad(b), kept);
    ck_assert_int_eq(ag_optimizer_step(opt), AG_OK);
    assert_error(ag_optimizer_step(NULL), AG_ERR_INVALID_ARG, "optimizer is NULL");
    ag_optimizer_free(opt);
}
END_TEST

/* Non-contiguous parameters and gradients take the kernels' strided path; the result equals
 * the contiguous one. */
START_TEST(strided_parameters_and_gradients) {
    const optim_case *c = &CASES[_i];
    ag_tensor *wt = ag_detach(ag_transpose(
        tu_tensor(AG_F64, 2, TU_SHAPE(2, 3), TU_VALUES(0.5, 2.0, -0.5, -1.25, 0.75, 1.5)), 0, 1));
    ck_assert(!ag_is_contiguous(wt));
    ck_assert_int_eq(ag_set_requires_grad(wt, true), AG_OK);
    ag_tensor *b = leaf(AG_F64, 1, TU_SHAPE(2), B0);
    ag_optimizer *opt = new_optimizer(c, 2, (ag_named_tensor[]){{"w", wt}, {"b", b}});
    for (int k = 0; k < 5; k++) {
        set_fixture_grads(wt, b, k);
        ag_tensor *g = ag_tensor_grad(wt);
        ag_tensor *gt = ag_transpose(ag_contiguous(ag_transpose(g, 0, 1)), 0, 1);
        ck_assert(!ag_is_contiguous(gt));
        ck_assert_int_eq(ag_set_grad(wt, gt), AG_OK);
        ck_assert_int_eq(ag_optimizer_step(opt), AG_OK);
        assert_close(wt, c->want[k], 1e-14, 1e-12, c->name, k + 1);
    }
    ag_optimizer_free(opt);
}
END_TEST

/* Adam over a tensor large enough to be split across threads equals the formula written
 * with ag ops. */
START_TEST(adam_large_tensor_matches_composed_ops) {
    ag_generator *gen = ag_generator_new(7);
    const int64_t n = 100003;
    ag_tensor *p = ag_randn(gen, AG_F64, 1, &n);
    ck_assert_int_eq(ag_set_requires_grad(p, true), AG_OK);
    ag_tensor *ref = ag_clone(p);
    ag_adam_options o = {.lr = 0.01, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8, .weight_decay = 0.1};
    ag_optimizer *opt = ag_adam_new(1, &(ag_named_tensor){"p", p}, &o);
    ag_tensor *m = ag_zeros(AG_F64, 1, &n), *v = ag_zeros(AG_F64, 1, &n);
    for (int k = 1; k <= 3; k++) {
        ag_tensor *g = ag_randn(gen, AG_F64, 1, &n);
        ck_assert_int_eq(ag_set_grad(p, g), AG_OK);
        ck_assert_int_eq(ag_optimizer_step(opt), AG_OK);
        ag_tensor *gd = ag_add(g, ag_mul_scalar(ref, o.weight_decay));
        m = ag_add(ag_mul_scalar(m, o.beta1), ag_mul_scalar(gd, 1 - o.beta1));
        v = ag_add(ag_mul_scalar(v, o.beta2), ag_mul_scalar(ag_mul(gd, gd), 1 - o.beta2));
        ag_tensor *denom =
            ag_add_scalar(ag_mul_scalar(ag_sqrt(v), 1 / sqrt(1 - pow(o.beta2, k))), o.eps);
        ref = ag_sub(ref, ag_mul_scalar(ag_div(m, denom), o.lr / (1 - pow(o.beta1, k))));
        ck_assert_double_lt(tu_max_abs_diff(p, ref), 1e-12);
    }
    ag_optimizer_free(opt);
    ag_generator_free(gen);
}
END_TEST

/* The registered update ops run the same update as the optimizers and return the updated
 * tensors themselves. */
START_TEST(update_ops_through_the_registry) {
    ag_op_def *adam = ag__op_find("adam_update"), *sgd = ag__op_find("sgd_update"),
              *sgdm = ag__op_find("sgd_momentum_update");
    ck_assert_ptr_nonnull(adam);
    ck_assert_ptr_nonnull(sgd);
    ck_assert_ptr_nonnull(sgdm);
    ag_tensor *w = leaf(AG_F64, 2, TU_SHAPE(3, 2), W0);
    double g0[6];
    for (int j = 0; j < 6; j++) g0[j] = grad_value(0, j);
    ag_tensor *in[4] = {w, tu_tensor(AG_F64, 2, TU_SHAPE(3, 2), g0),
                        ag_empty(AG_F64, 2, TU_SHAPE(3, 2)), ag_empty(AG_F64, 2, TU_SHAPE(3, 2))};
    ag_attrs at = {.reals = {0.01, 0.9, 0.999, 1e-8, 0}, .ints = {0, 1, 1}};
    ag_tensor *out[3];
    uint64_t v = ag_version_of(w);
    ck_assert_int_eq(ag__dispatch(adam, 4, in, &at, 3, out), AG_OK);
    ck_assert_ptr_eq(out[0], w);
    ck_assert_ptr_eq(out[1], in[2]);
    ck_assert_ptr_eq(out[2], in[3]);
    ck_assert_uint_gt(ag_version_of(w), v);
    assert_close(w, ADAM[0], 1e-14, 1e-12, "adam_update op", 1);
    /* Plain SGD: p -= lr * g; a momentum buffer needs the momentum op. */
    ag_attrs sgd_at = {.reals = {0.5}};
    ck_assert_int_eq(ag__dispatch(sgd, 2, in, &sgd_at, 1, out), AG_OK);
    ag_attrs wrong = {.reals = {0.5, 0.9}};
    assert_error(ag__dispatch(sgd, 2, in, &wrong, 1, out), AG_ERR_INVALID_ARG,
                 "takes 3 inputs and 2 outputs");
    assert_error(ag__dispatch(sgdm, 3, in, &wrong, 1, out), AG_ERR_INVALID_ARG,
                 "takes 3 inputs and 2 outputs (param and state), got 3 and 1");
    at.ints[2] = 0;
    assert_error(ag__dispatch(adam, 4, in, &at, 3, out), AG_ERR_INVALID_ARG,
                 "step must be >= 1, got 0");
    ag_tensor *bad[4] = {w, in[1], ag_expand(ag_scalar(AG_F64, 0), 2, TU_SHAPE(3, 2)), in[3]};
    at.ints[2] = 1;
    char words[256];
    assert_error(ag__dispatch(adam, 4, bad, &at, 3, out), AG_ERR_INVALID_ARG,
                 on_default_device("input 2 (float64[3, 2] on %s) has overlapping memory", words,
                                   sizeof words));
    bad[2] = ag_empty(AG_F32, 2, TU_SHAPE(3, 2));
    assert_error(ag__dispatch(adam, 4, bad, &at, 3, out), AG_ERR_DTYPE, "exp_avg is float32");
}
END_TEST

static Suite *optim_suite(void) {
    Suite *s = suite_create("optim");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, tu_scope_setup, tu_scope_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, optimizers_match_torch, 0, 2 * N_CASES);
    tcase_add_loop_test(tc, schedulers_match_torch, 0,
                        (int)(sizeof SCHEDULERS / sizeof SCHEDULERS[0]));
    tcase_add_test(tc, scheduler_errors);
    tcase_add_loop_test(tc, clip_grad_norm_matches_torch, 0, (int)(sizeof CLIPS / sizeof CLIPS[0]));
    tcase_add_test(tc, clip_grad_norm_edge_cases);
    tcase_add_test(tc, gradient_accumulation_equals_full_batch);
    tcase_add_test(tc, zero_grad_fills_or_drops);
    tcase_add_test(tc, parameter_without_grad_is_untouched);
    tcase_add_test(tc, lr_can_be_set);
    tcase_add_loop_test(tc, state_round_trip, 0, N_CASES);
    tcase_add_test(tc, load_state_errors);
    tcase_add_test(tc, construction_errors);
    tcase_add_test(tc, step_rejects_gradient_on_other_device);
    tcase_add_loop_test(tc, strided_parameters_and_gradients, 0, N_CASES);
    tcase_add_test(tc, adam_large_tensor_matches_composed_ops);
    tcase_add_test(tc, update_ops_through_the_registry);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    return tu_run_suite(optim_suite());
}
