/* nn functional ops and losses (include/ag/nn.h): values against PyTorch 1.13 (numbers from
 * tests/reference/nn_functional.py), gradcheck and gradgradcheck in float64, float32 and
 * non-contiguous inputs, the parallel kernel paths against composites, dropout's masks,
 * and error cases. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "ag/ag.h"
#include "ag/nn.h"
#include "test_util.h"

/* int64 tensor from a literal. */
static ag_tensor *i64(int ndim, const int64_t *shape, const int64_t *values) {
    ag_tensor *t = ag_from_i64(values, ndim, shape);
    ck_assert_ptr_nonnull(t);
    return t;
}

/* Checks t's shape and values against want within atol (and rtol 1e-7). */
static void assert_values(const ag_tensor *t, int ndim, const int64_t *shape, const double *want,
                          double atol) {
    char msg[512] = "";
    ck_assert_msg(t != NULL, "NULL result: %s", ag_last_error());
    ck_assert_msg(tu_values_are(t, ndim, shape, want, atol, 1e-7, msg, sizeof msg, NULL), "%s",
                  msg);
}

/* Checks that a call failed with `status` and a message containing `words`. */
static void assert_error(const ag_tensor *result, ag_status status, const char *words) {
    ck_assert_ptr_null(result);
    ck_assert_msg(ag_last_status() == status, "status %s, expected %s (%s)",
                  ag_status_name(ag_last_status()), ag_status_name(status), ag_last_error());
    ck_assert_msg(strstr(ag_last_error(), words), "message '%s' lacks '%s'", ag_last_error(),
                  words);
    ag_clear_error();
}

/* Marks t as a leaf requiring grad; returns it. */
static ag_tensor *leaf(ag_tensor *t) {
    ck_assert_int_eq(ag_set_requires_grad(t, true), AG_OK);
    return t;
}

/* Options with the given reduction, ignore_index and label smoothing. */
static ag_cross_entropy_options ce_opts(ag_reduction r, int64_t ignore, double smoothing) {
    return (ag_cross_entropy_options){r, ignore, smoothing};
}

/* ---- reference values (output of tests/reference/nn_functional.py) ---- */

static const double LINEAR_2D[] = {1.7436216543336194,  2.0052693368346866,  -0.7221136793927789,
                                   -1.5902157314830512, -1.0398951850276217, 0.5618093188099881,
                                   1.8571905151799037,  0.2181498084893269};
static const double LINEAR_1D[] = {1.7436216543336194, 2.0052693368346866, -0.7221136793927789,
                                   -1.5902157314830512};
static const double LINEAR_3D_NOBIAS[] = {
    1.6927528730731496,  1.370039520007458,   -1.4989273494341684, -1.5820993724117784,
    -0.5277171479668223, 0.30889726326706346, 0.57141820397947,    -0.22805621380407873,
    -1.1599209801099555, -1.6819306801713245, 0.9219708406812038,  1.8123659547493407,
    1.6988803248711424,  1.3893350409159013,  -1.5023249789245934, -1.6018755709251342};
static const double LN_AFFINE[] = {0.01829325200619083, 1.3494640122688053,  0.6488586497368072,
                                   1.3772826540085392,  -1.4672754461610602, 0.9354841102176524,
                                   1.3206295724237702,  1.150515769059908,   -1.5421711325429648,
                                   -0.3296724802282002, 1.2154913485841645,  0.7436710877752023};
static const double LN_PLAIN[] = {0.48452246325275233, 1.1816989074933435,  -0.13287538095328005,
                                  -1.5333459897928159, -1.2809201069463838, 0.75660170652995,
                                  1.1702655211035633,  -0.6459471206871292, -1.3699257740865323,
                                  -0.5425302627134945, 0.96631218637603,    0.9461438504239966};
static const double LN_EPS[] = {0.4729123012432195,  1.1533829535324458,  -0.12969141154639371,
                                -1.4966038432292716, -1.2376446340676852, 0.73104016178305,
                                1.1307284777354767,  -0.6241240054508413, -1.341938591444461,
                                -0.5314465282231801, 0.9465707112093201,  0.926814408458321};
static const double LN_2DIMS[] = {
    -0.7301448544027874, -0.07025369580288338, 0.5960842454452299,  1.0161457511796943,
    1.0795655947854705,  0.8707104378886692,   0.6159289214564515,  0.5544564265494583,
    0.8027471490380462,  1.285526340550039,    1.771012380931639,   1.9917878316772397,
    -1.634416169771525,  -1.1907151794306838,  -0.3899555165173745, 0.47599176522656067,
    1.099564421606927,   1.3149153300095695,   1.178069247486932,   0.9273391856310363,
    0.8458371903247393,  1.1004835399956476,   1.644517620923042,   2.2363813052502644};
static const double LN_TRANSPOSED[] = {
    0.14956394733940936, -1.1118306376870661, 1.3500212252314108,   1.1188708238721357,
    0.5413983932858081,  -1.0349281738534593, 0.36633523926503836,  0.7704174388785177,
    -0.4864842383054394, 0.9370328024429394,  -0.10092889482062731, 0.7440865133539677};
static const double LN_GRAD_X[] = {
    -0.010871590835324962, -0.029316910288299886, 0.07250430103531058,  -0.03231579991168568,
    0.13158548202911602,   0.17267254910616225,   -0.0873419158910857,  -0.21691611524419244,
    0.12807947142201362,   -0.2021263788515521,   -0.21105817067511523, 0.28510507810465374};
static const double LN_GRAD_W[] = {0.3972751715978435, 1.8980287020328925, -1.0675058798032184,
                                   -2.082212222499735};
static const double LN_GRAD_B[] = {0.8152154230795148, 0.4508726363404213, 0.025506353411805627,
                                   -0.40331209479538543};
static const double CE_NONE[] = {1.1270989383488432, 3.6580773128127175, 4.457350571395783,
                                 1.37619696762368};
static const double CE_SUM[] = {10.618723790181026};
static const double CE_MEAN[] = {2.6546809475452564};
static const double CE_SMOOTH_NONE[] = {1.2062408296581946, 3.5447230310019564, 4.269547707021957,
                                        1.4496348441317468};
static const double CE_SMOOTH_MEAN[] = {2.6175366029534644};
static const double CE_IGNORE_NONE[] = {1.1270989383488432, 0.0, 4.457350571395783, 0.0};
static const double CE_IGNORE_MEAN[] = {2.792224754872313};
static const double CE_IGNORE_SUM[] = {5.584449509744626};
static const double CE_IGNORE2_SMOOTH_MEAN[] = {3.0068371892273698};
static const double CE_ALL_IGNORED[] = {NAN};
static const double CE_NCD_NONE[] = {1.7351158137476348, 2.5492025778061964, 2.0352854861836223,
                                     3.0210225159428385, 2.265771505386812,  0.2795950971161832,
                                     0.5436015424674951, 3.2432120646189073};
static const double CE_NCD_MEAN[] = {1.9591008254087114};
static const double CE_NCD_SMOOTH_SUM[] = {15.340113036145723};
static const double CE_UNBATCHED[] = {1.8676862424020997};
static const double CE_PROB_NONE[] = {1.6784311640757155, 2.6368909393528193, 3.2107519052724927,
                                      2.9552601400627774};
static const double CE_PROB_SUM[] = {10.481334148763805};
static const double CE_PROB_MEAN[] = {2.6203335371909513};
static const double CE_PROB_SMOOTH_NONE[] = {1.7024398328123795, 2.625655294888048,
                                             3.147608907510996, 2.870791699326934};
static const double CE_GRAD_SMOOTH_IGNORE[] = {0.02707331240174148,
                                               -0.19867608117348098,
                                               0.12179223678946034,
                                               0.04482689315852028,
                                               0.004983638823758794,
                                               0.0,
                                               0.0,
                                               0.0,
                                               0.0,
                                               0.0,
                                               0.19841031806429654,
                                               0.08916902996739975,
                                               0.015860780375480638,
                                               -0.0006378075939100947,
                                               -0.30280232081326686,
                                               -0.0014471310637769852,
                                               0.014938214764717303,
                                               -0.22248762131734534,
                                               0.13666919959250892,
                                               0.0723273380238961};
static const double CE_BIG_NONE[] = {2000.0, 1.3132616875182228};
static const double CE_MASKED[] = {0.31326168751822286};
static const double CE_MASKED_SMOOTH[] = {INFINITY};
static const double BCE_NONE[] = {1.3223449227465798, 0.5861650192037535, 2.6635664879668117,
                                  0.7838365606858846, 2.5499984103920785, 1.3490693624202903};
static const double BCE_SUM[] = {9.254980763415398};
static const double BCE_MEAN[] = {1.5424967939025664};
static const double BCE_PW_NONE[] = {1.3088314322011145, 0.665627471796109, 7.989521978036754,
                                     0.4836230280255216, 2.557905362932049, 3.965107170962895};
static const double BCE_PW_MEAN[] = {2.8284360739924073};
static const double BCE_LARGE[] = {200.0, 0.0, 0.6931471805599453, 0.0, 200.0};
static const double BCE_LARGE_F32[] = {200.0, 0.0, 0.6931471824645996, 0.0, 200.0};
static const double BCE_LARGE_PW_GRAD[] = {-2.0, 1.928749847963918e-22, -0.25, 0.0, 1.0};
static const double MSE_NONE[] = {0.28590454382905495, 0.00015752733795603945, 0.8449485131796407,
                                  3.764222433085278,   7.440357956864784,      8.899797736893802,
                                  6.715143235262598,   2.800846347428253,      0.2882502197836579,
                                  0.2111414615624234,  1.11826150452398,       1.4462162425916443};
static const double MSE_SUM[] = {33.815247722343074};
static const double MSE_MEAN[] = {2.8179373101952563};
static const double MSE_BROADCAST_MEAN[] = {0.28394962181963285};
static const double EMB_VALUES[] = {-0.4425204432948517, -0.7231881240865118,  -0.9161659367494549,
                                    -0.5646424733950354, -0.24740395925452294, 0.09983341664682813,
                                    0.9974949866040544,  0.9612752029753,      0.8084964038195903,
                                    -0.4425204432948517, -0.7231881240865118,  -0.9161659367494549};
static const double EMB_GRAD_W[] = {
    0.9092974268256817,   0.5984721441039565,  0.1411200080598672, 0.0, 0.0, 0.0,
    -0.35078322768961984, -0.7568024953079282, -0.977530117665097, 0.0, 0.0, 0.0,
    -0.47949873605893545, 0.13593065923750458, 0.7180794884051286};

/* ---- values against PyTorch ---- */

START_TEST(linear_values) {
    ag_tensor *x = tu_pattern(2, TU_SHAPE(2, 3), 0.9, 0.1, 1);
    ag_tensor *w = tu_pattern(2, TU_SHAPE(4, 3), 0.5, 0.3, 1);
    ag_tensor *b = tu_pattern(1, TU_SHAPE(4), 1.1, 0.2, 1);
    assert_values(ag_linear(x, w, b), 2, TU_SHAPE(2, 4), LINEAR_2D, 1e-12);
    assert_values(ag_linear(ag_select(x, 0, 0), w, b), 1, TU_SHAPE(4), LINEAR_1D, 1e-12);
    ag_tensor *x3 = tu_pattern(3, TU_SHAPE(2, 2, 3), 0.7, 0.4, 1);
    assert_values(ag_linear(x3, w, NULL), 3, TU_SHAPE(2, 2, 4), LINEAR_3D_NOBIAS, 1e-12);
    ag_tensor *y32 =
        ag_linear(ag_to_dtype(x, AG_F32), ag_to_dtype(w, AG_F32), ag_to_dtype(b, AG_F32));
    ck_assert_int_eq(ag_dtype_of(y32), AG_F32);
    assert_values(y32, 2, TU_SHAPE(2, 4), LINEAR_2D, 1e-5);
}
END_TEST

START_TEST(layer_norm_values) {
    ag_tensor *x = tu_pattern(2, TU_SHAPE(3, 4), 1.3, 0.5, 2);
    ag_tensor *w = tu_pattern(1, TU_SHAPE(4), 0.8, 1.0, 1);
    ag_tensor *b = tu_pattern(1, TU_SHAPE(4), 0.6, -0.4, 1);
    assert_values(ag_layer_norm(x, 1, w, b, 1e-5), 2, TU_SHAPE(3, 4), LN_AFFINE, 1e-12);
    assert_values(ag_layer_norm(x, 1, NULL, NULL, 1e-5), 2, TU_SHAPE(3, 4), LN_PLAIN, 1e-12);
    assert_values(ag_layer_norm(x, 1, NULL, NULL, 0.1), 2, TU_SHAPE(3, 4), LN_EPS, 1e-12);
    /* Weight only and bias only: LN_PLAIN scaled or shifted. */
    ag_tensor *plain = ag_from_f64(LN_PLAIN, 2, TU_SHAPE(3, 4));
    ck_assert_double_le(tu_max_abs_diff(ag_layer_norm(x, 1, w, NULL, 1e-5), ag_mul(plain, w)),
                        1e-12);
    ck_assert_double_le(tu_max_abs_diff(ag_layer_norm(x, 1, NULL, b, 1e-5), ag_add(plain, b)),
                        1e-12);
    /* Two normalised dims. */
    ag_tensor *x3 = tu_pattern(3, TU_SHAPE(2, 3, 4), 0.45, 0.2, 3);
    ag_tensor *w2 = tu_pattern(2, TU_SHAPE(3, 4), 0.3, 0.7, 1);
    ag_tensor *b2 = tu_pattern(2, TU_SHAPE(3, 4), 0.25, -1.0, 1);
    assert_values(ag_layer_norm(x3, 2, w2, b2, 1e-5), 3, TU_SHAPE(2, 3, 4), LN_2DIMS, 1e-12);
    /* Non-contiguous input (a transpose) and weight (a column of a [4, 2] matrix). */
    ag_tensor *xt = ag_transpose(tu_pattern(2, TU_SHAPE(4, 3), 1.3, 0.5, 2), 0, 1);
    ck_assert(!ag_is_contiguous(xt));
    assert_values(ag_layer_norm(xt, 1, w, b, 1e-5), 2, TU_SHAPE(3, 4), LN_TRANSPOSED, 1e-12);
    ag_tensor *w_col = ag_select(ag_stack(2, (ag_tensor *[]){w, b}, 1), 1, 0);
    ck_assert(!ag_is_contiguous(w_col));
    assert_values(ag_layer_norm(xt, 1, w_col, b, 1e-5), 2, TU_SHAPE(3, 4), LN_TRANSPOSED, 1e-12);
    /* Two normalised dims that are not contiguous: [2, 4, 3] transposed to [2, 3, 4]. */
    ag_tensor *x3t = ag_contiguous(ag_transpose(x3, 1, 2));
    assert_values(ag_layer_norm(ag_transpose(x3t, 1, 2), 2, w2, b2, 1e-5), 3, TU_SHAPE(2, 3, 4),
                  LN_2DIMS, 1e-12);
    /* float32 */
    ag_tensor *y32 = ag_layer_norm(ag_to_dtype(x, AG_F32), 1, ag_to_dtype(w, AG_F32),
                                   ag_to_dtype(b, AG_F32), 1e-5);
    ck_assert_int_eq(ag_dtype_of(y32), AG_F32);
    assert_values(y32, 2, TU_SHAPE(3, 4), LN_AFFINE, 1e-5);
    /* Zero rows: an empty result. */
    assert_values(ag_layer_norm(ag_zeros(AG_F64, 2, TU_SHAPE(0, 4)), 1, w, b, 1e-5), 2,
                  TU_SHAPE(0, 4), NULL, 0);
}
END_TEST

START_TEST(layer_norm_gradients) {
    ag_tensor *x = leaf(tu_pattern(2, TU_SHAPE(3, 4), 1.3, 0.5, 2));
    ag_tensor *w = leaf(tu_pattern(1, TU_SHAPE(4), 0.8, 1.0, 1));
    ag_tensor *b = leaf(tu_pattern(1, TU_SHAPE(4), 0.6, -0.4, 1));
    ag_tensor *y = ag_layer_norm(x, 1, w, b, 1e-5);
    ck_assert_str_eq(ag_grad_fn_name(y), "layer_norm");
    ag_tensor *r = tu_pattern(2, TU_SHAPE(3, 4), 0.37, 0.9, 1);
    ck_assert_int_eq(ag_backward(ag_sum(ag_mul(y, r), 0, NULL, false), NULL), AG_OK);
    assert_values(ag_tensor_grad(x), 2, TU_SHAPE(3, 4), LN_GRAD_X, 1e-12);
    assert_values(ag_tensor_grad(w), 1, TU_SHAPE(4), LN_GRAD_W, 1e-12);
    assert_values(ag_tensor_grad(b), 1, TU_SHAPE(4), LN_GRAD_B, 1e-12);
    /* Only the bias requires grad: its gradient is r summed over the rows. */
    ag_tensor *b2 = leaf(ag_clone(ag_detach(b)));
    ag_tensor *y2 = ag_layer_norm(ag_detach(x), 1, ag_detach(w), b2, 1e-5);
    ck_assert_int_eq(ag_backward(ag_sum(ag_mul(y2, r), 0, NULL, false), NULL), AG_OK);
    ck_assert_double_le(tu_max_abs_diff(ag_tensor_grad(b2), ag_sum(r, 1, (int[]){0}, false)),
                        1e-12);
}
END_TEST

START_TEST(cross_entropy_values) {
    ag_tensor *logits = tu_pattern(2, TU_SHAPE(4, 5), 0.77, 0.3, 2);
    ag_tensor *target = i64(1, TU_SHAPE(4), (int64_t[]){1, 0, 4, 2});
    ag_cross_entropy_options o = ag_cross_entropy_defaults();
    ck_assert_int_eq(o.reduction, AG_REDUCTION_MEAN);
    ck_assert_int_eq(o.ignore_index, -100);
    ck_assert_double_eq(o.label_smoothing, 0);
    assert_values(ag_cross_entropy(logits, target, &o), 0, NULL, CE_MEAN, 1e-12);
    assert_values(ag_cross_entropy(logits, target, NULL), 0, NULL, CE_MEAN, 1e-12);
    o = ce_opts(AG_REDUCTION_SUM, -100, 0);
    assert_values(ag_cross_entropy(logits, target, &o), 0, NULL, CE_SUM, 1e-12);
    o = ce_opts(AG_REDUCTION_NONE, -100, 0);
    assert_values(ag_cross_entropy(logits, target, &o), 1, TU_SHAPE(4), CE_NONE, 1e-12);
    /* label smoothing 0.1 */
    o = ce_opts(AG_REDUCTION_NONE, -100, 0.1);
    assert_values(ag_cross_entropy(logits, target, &o), 1, TU_SHAPE(4), CE_SMOOTH_NONE, 1e-12);
    o = ce_opts(AG_REDUCTION_MEAN, -100, 0.1);
    assert_values(ag_cross_entropy(logits, target, &o), 0, NULL, CE_SMOOTH_MEAN, 1e-12);
    /* ignore_index: the default -100, and a class number (2) with smoothing */
    ag_tensor *ign = i64(1, TU_SHAPE(4), (int64_t[]){1, -100, 4, -100});
    o = ce_opts(AG_REDUCTION_NONE, -100, 0);
    assert_values(ag_cross_entropy(logits, ign, &o), 1, TU_SHAPE(4), CE_IGNORE_NONE, 1e-12);
    assert_values(ag_cross_entropy(logits, ign, NULL), 0, NULL, CE_IGNORE_MEAN, 1e-12);
    o = ce_opts(AG_REDUCTION_SUM, -100, 0);
    assert_values(ag_cross_entropy(logits, ign, &o), 0, NULL, CE_IGNORE_SUM, 1e-12);
    o = ce_opts(AG_REDUCTION_MEAN, 2, 0.1);
    assert_values(ag_cross_entropy(logits, target, &o), 0, NULL, CE_IGNORE2_SMOOTH_MEAN, 1e-12);
    /* Every target ignored: the mean is 0/0 = NaN, as PyTorch. */
    ag_tensor *all_ign = i64(1, TU_SHAPE(4), (int64_t[]){-100, -100, -100, -100});
    assert_values(ag_cross_entropy(logits, all_ign, NULL), 0, NULL, CE_ALL_IGNORED, 0);
    /* [N, C, d] logits with [N, d] targets. */
    ag_tensor *logits3 = tu_pattern(3, TU_SHAPE(2, 3, 4), 0.61, -0.2, 1.5);
    ag_tensor *target3 = i64(2, TU_SHAPE(2, 4), (int64_t[]){0, 2, 1, 1, 2, 0, 0, 1});
    o = ce_opts(AG_REDUCTION_NONE, -100, 0);
    assert_values(ag_cross_entropy(logits3, target3, &o), 2, TU_SHAPE(2, 4), CE_NCD_NONE, 1e-12);
    assert_values(ag_cross_entropy(logits3, target3, NULL), 0, NULL, CE_NCD_MEAN, 1e-12);
    o = ce_opts(AG_REDUCTION_SUM, -100, 0.1);
    assert_values(ag_cross_entropy(logits3, target3, &o), 0, NULL, CE_NCD_SMOOTH_SUM, 1e-12);
    /* Unbatched: logits [C], a 0-dim target. */
    assert_values(ag_cross_entropy(ag_select(logits, 0, 0), ag_scalar(AG_I64, 3), NULL), 0, NULL,
                  CE_UNBATCHED, 1e-12);
    /* Non-contiguous logits: the transpose of a contiguous transpose. */
    ag_tensor *lt = ag_transpose(ag_contiguous(ag_transpose(logits, 0, 1)), 0, 1);
    ck_assert(!ag_is_contiguous(lt));
    o = ce_opts(AG_REDUCTION_NONE, -100, 0.1);
    assert_values(ag_cross_entropy(lt, target, &o), 1, TU_SHAPE(4), CE_SMOOTH_NONE, 1e-12);
    /* float32 */
    ag_tensor *l32 = ag_cross_entropy(ag_to_dtype(logits, AG_F32), target, &o);
    ck_assert_int_eq(ag_dtype_of(l32), AG_F32);
    assert_values(l32, 1, TU_SHAPE(4), CE_SMOOTH_NONE, 1e-5);
    /* Huge logits: the log-sum-exp is stable. */
    ag_tensor *big = ag_from_f64((double[]){1000, 0, -1000, -500, 500, 499}, 2, TU_SHAPE(2, 3));
    o = ce_opts(AG_REDUCTION_NONE, -100, 0);
    ag_tensor *t22 = i64(1, TU_SHAPE(2), (int64_t[]){2, 2});
    assert_values(ag_cross_entropy(big, t22, &o), 1, TU_SHAPE(2), CE_BIG_NONE, 1e-9);
    assert_values(ag_cross_entropy(ag_to_dtype(big, AG_F32), t22, &o), 1, TU_SHAPE(2), CE_BIG_NONE,
                  1e-4);
    /* A masked class (-inf logit) is fine without smoothing; with it the loss is inf. */
    ag_tensor *masked = ag_from_f64((double[]){0, -INFINITY, 1}, 2, TU_SHAPE(1, 3));
    ag_tensor *t2 = i64(1, TU_SHAPE(1), (int64_t[]){2});
    assert_values(ag_cross_entropy(masked, t2, NULL), 0, NULL, CE_MASKED, 1e-12);
    o = ce_opts(AG_REDUCTION_MEAN, -100, 0.1);
    assert_values(ag_cross_entropy(masked, t2, &o), 0, NULL, CE_MASKED_SMOOTH, 0);
    /* An empty batch: sum 0, mean NaN. */
    ag_tensor *e = ag_zeros(AG_F64, 2, TU_SHAPE(0, 5));
    ag_tensor *et = ag_zeros(AG_I64, 1, TU_SHAPE(0));
    o = ce_opts(AG_REDUCTION_SUM, -100, 0);
    assert_values(ag_cross_entropy(e, et, &o), 0, NULL, (double[]){0}, 0);
    assert_values(ag_cross_entropy(e, et, NULL), 0, NULL, (double[]){NAN}, 0);
}
END_TEST

START_TEST(cross_entropy_probabilities) {
    ag_tensor *logits = tu_pattern(2, TU_SHAPE(4, 5), 0.77, 0.3, 2);
    ag_tensor *probs = ag_softmax(tu_pattern(2, TU_SHAPE(4, 5), 0.53, 0.8, 1.2), 1);
    ag_cross_entropy_options o = ce_opts(AG_REDUCTION_NONE, -100, 0);
    assert_values(ag_cross_entropy(logits, probs, &o), 1, TU_SHAPE(4), CE_PROB_NONE, 1e-12);
    o.reduction = AG_REDUCTION_SUM;
    assert_values(ag_cross_entropy(logits, probs, &o), 0, NULL, CE_PROB_SUM, 1e-12);
    assert_values(ag_cross_entropy(logits, probs, NULL), 0, NULL, CE_PROB_MEAN, 1e-12);
    o = ce_opts(AG_REDUCTION_NONE, -100, 0.1);
    assert_values(ag_cross_entropy(logits, probs, &o), 1, TU_SHAPE(4), CE_PROB_SMOOTH_NONE, 1e-12);
    /* float32 logits and targets */
    assert_values(ag_cross_entropy(ag_to_dtype(logits, AG_F32), ag_to_dtype(probs, AG_F32), &o), 1,
                  TU_SHAPE(4), CE_PROB_SMOOTH_NONE, 1e-5);
}
END_TEST

START_TEST(cross_entropy_gradient) {
    ag_tensor *logits = leaf(tu_pattern(2, TU_SHAPE(4, 5), 0.77, 0.3, 2));
    ag_tensor *target = i64(1, TU_SHAPE(4), (int64_t[]){1, -100, 4, 2});
    ag_cross_entropy_options o = ce_opts(AG_REDUCTION_MEAN, -100, 0.1);
    ag_tensor *loss = ag_cross_entropy(logits, target, &o);
    ck_assert_int_eq(ag_backward(loss, NULL), AG_OK);
    assert_values(ag_tensor_grad(logits), 2, TU_SHAPE(4, 5), CE_GRAD_SMOOTH_IGNORE, 1e-12);
    ck_assert(!ag_requires_grad(target));
}
END_TEST

START_TEST(bce_with_logits_values) {
    ag_tensor *x = tu_pattern(2, TU_SHAPE(2, 3), 1.9, 0.4, 3);
    ag_tensor *t = ag_abs(tu_pattern(2, TU_SHAPE(2, 3), 0.8, 0.1, 1));
    ag_tensor *pw = ag_from_f64((double[]){0.5, 2, 3}, 1, TU_SHAPE(3));
    assert_values(ag_bce_with_logits(x, t, NULL, AG_REDUCTION_NONE), 2, TU_SHAPE(2, 3), BCE_NONE,
                  1e-12);
    assert_values(ag_bce_with_logits(x, t, NULL, AG_REDUCTION_SUM), 0, NULL, BCE_SUM, 1e-12);
    assert_values(ag_bce_with_logits(x, t, NULL, AG_REDUCTION_MEAN), 0, NULL, BCE_MEAN, 1e-12);
    assert_values(ag_bce_with_logits(x, t, pw, AG_REDUCTION_NONE), 2, TU_SHAPE(2, 3), BCE_PW_NONE,
                  1e-12);
    assert_values(ag_bce_with_logits(x, t, pw, AG_REDUCTION_MEAN), 0, NULL, BCE_PW_MEAN, 1e-12);
    /* |x| up to 200: no overflow, in float64 and float32. */
    ag_tensor *xl = ag_from_f64((double[]){-200, -50, 0, 50, 200}, 1, TU_SHAPE(5));
    ag_tensor *tl = ag_from_f64((double[]){1, 0, 0.5, 1, 0}, 1, TU_SHAPE(5));
    assert_values(ag_bce_with_logits(xl, tl, NULL, AG_REDUCTION_NONE), 1, TU_SHAPE(5), BCE_LARGE,
                  1e-12);
    ag_tensor *l32 = ag_bce_with_logits(ag_to_dtype(xl, AG_F32), ag_to_dtype(tl, AG_F32), NULL,
                                        AG_REDUCTION_NONE);
    ck_assert_int_eq(ag_dtype_of(l32), AG_F32);
    assert_values(l32, 1, TU_SHAPE(5), BCE_LARGE_F32, 1e-6);
    /* Their gradient with a 0-dim pos_weight, including x = 0 exactly (sigmoid(0) = 0.5). */
    ag_tensor *xg = leaf(ag_clone(xl));
    ag_tensor *loss = ag_bce_with_logits(xg, tl, ag_scalar(AG_F64, 2), AG_REDUCTION_SUM);
    ck_assert_int_eq(ag_backward(loss, NULL), AG_OK);
    assert_values(ag_tensor_grad(xg), 1, TU_SHAPE(5), BCE_LARGE_PW_GRAD, 1e-12);
}
END_TEST

START_TEST(mse_loss_values) {
    ag_tensor *a = tu_pattern(2, TU_SHAPE(3, 4), 0.3, 0.2, 2);
    ag_tensor *c = tu_pattern(2, TU_SHAPE(3, 4), 0.7, 1.2, 1);
    assert_values(ag_mse_loss(a, c, AG_REDUCTION_NONE), 2, TU_SHAPE(3, 4), MSE_NONE, 1e-12);
    assert_values(ag_mse_loss(a, c, AG_REDUCTION_SUM), 0, NULL, MSE_SUM, 1e-12);
    assert_values(ag_mse_loss(a, c, AG_REDUCTION_MEAN), 0, NULL, MSE_MEAN, 1e-12);
    /* Shapes that broadcast ([3, 1] and [4]) are allowed, as in PyTorch (which warns). */
    ag_tensor *col = tu_pattern(2, TU_SHAPE(3, 1), 0.9, 0, 1);
    ag_tensor *row = tu_pattern(1, TU_SHAPE(4), 0.4, 1, 1);
    assert_values(ag_mse_loss(col, row, AG_REDUCTION_MEAN), 0, NULL, MSE_BROADCAST_MEAN, 1e-12);
    ag_tensor *none = ag_mse_loss(col, row, AG_REDUCTION_NONE);
    ck_assert(tu_shape_is(none, 2, TU_SHAPE(3, 4), NULL, 0));
    /* Non-contiguous and float32. */
    ag_tensor *at = ag_transpose(ag_contiguous(ag_transpose(a, 0, 1)), 0, 1);
    assert_values(ag_mse_loss(at, c, AG_REDUCTION_SUM), 0, NULL, MSE_SUM, 1e-12);
    assert_values(ag_mse_loss(ag_to_dtype(a, AG_F32), ag_to_dtype(c, AG_F32), AG_REDUCTION_MEAN), 0,
                  NULL, MSE_MEAN, 1e-5);
}
END_TEST

START_TEST(embedding_values) {
    ag_tensor *w = leaf(tu_pattern(2, TU_SHAPE(5, 3), 0.35, -0.6, 1));
    ag_tensor *idx = i64(2, TU_SHAPE(2, 2), (int64_t[]){4, 0, 2, 4});
    ag_tensor *y = ag_embedding(idx, w);
    assert_values(y, 3, TU_SHAPE(2, 2, 3), EMB_VALUES, 0);
    /* Row 4 is used twice: its gradient accumulates. */
    ag_tensor *r = tu_pattern(3, TU_SHAPE(2, 2, 3), 0.5, 0.5, 1);
    ck_assert_int_eq(ag_backward(ag_sum(ag_mul(y, r), 0, NULL, false), NULL), AG_OK);
    assert_values(ag_tensor_grad(w), 2, TU_SHAPE(5, 3), EMB_GRAD_W, 1e-12);
    /* 0-dim indices give one row; non-contiguous indices work. */
    assert_values(ag_embedding(ag_scalar(AG_I64, 4), w), 1, TU_SHAPE(3), EMB_VALUES, 0);
    ag_tensor *idx_t = ag_transpose(i64(2, TU_SHAPE(2, 2), (int64_t[]){4, 2, 0, 4}), 0, 1);
    assert_values(ag_embedding(idx_t, w), 3, TU_SHAPE(2, 2, 3), EMB_VALUES, 0);
}
END_TEST

/* ---- dropout ---- */

START_TEST(dropout_masks) {
    const int64_t n = 4000;
    ag_tensor *x = ag_full(AG_F64, 1, &n, 3.0);
    ag_generator *g1 = ag_generator_new(42), *g2 = ag_generator_new(42);
    ag_tensor *y1 = ag_dropout(x, 0.25, true, g1), *y2 = ag_dropout(x, 0.25, true, g2);
    ag_generator_free(g1);
    ag_generator_free(g2);
    double *v = malloc((size_t)n * sizeof *v);
    ck_assert_int_eq(tu_read(y1, v, n), AG_OK);
    int64_t kept = 0;
    for (int64_t i = 0; i < n; i++) {
        /* Kept elements are scaled by 1 / (1 - p). */
        ck_assert_msg(v[i] == 0 || fabs(v[i] - 4.0) < 1e-12, "element %lld is %g", (long long)i,
                      v[i]);
        kept += v[i] != 0;
    }
    free(v);
    /* About 3000 of 4000 kept (binomial sd ~27). */
    ck_assert_msg(kept > 2850 && kept < 3150, "kept %lld of 4000", (long long)kept);
    /* Same seed, same mask. */
    ck_assert_double_eq(tu_max_abs_diff(y1, y2), 0);
    /* The gradient is the mask times the scale. */
    ag_tensor *xl = leaf(ag_ones(AG_F32, 1, &n));
    ag_generator *g3 = ag_generator_new(7);
    ag_tensor *y3 = ag_dropout(xl, 0.5, true, g3);
    ag_generator_free(g3);
    ck_assert_int_eq(ag_dtype_of(y3), AG_F32);
    ck_assert_int_eq(ag_backward(ag_sum(y3, 0, NULL, false), NULL), AG_OK);
    ck_assert_double_eq(tu_max_abs_diff(ag_tensor_grad(xl), y3), 0);
    /* The default generator works too. */
    ag_manual_seed(3);
    ck_assert_ptr_nonnull(ag_dropout(x, 0.5, true, NULL));
}
END_TEST

START_TEST(dropout_identity_and_edges) {
    ag_tensor *x = leaf(tu_pattern(2, TU_SHAPE(2, 3), 0.5, 0.1, 1));
    /* p = 0 and eval mode return x itself: no copy, same graph. */
    ck_assert_ptr_eq(ag_dropout(x, 0, true, NULL), x);
    ck_assert_ptr_eq(ag_dropout(x, 0.5, false, NULL), x);
    ck_assert_ptr_eq(ag_dropout(x, 1, false, NULL), x);
    /* p = 1: zeros, still differentiable (zero gradient). */
    ag_tensor *z = ag_dropout(x, 1, true, NULL);
    assert_values(z, 2, TU_SHAPE(2, 3), (double[]){0, 0, 0, 0, 0, 0}, 0);
    ck_assert_int_eq(ag_backward(ag_sum(z, 0, NULL, false), NULL), AG_OK);
    assert_values(ag_tensor_grad(x), 2, TU_SHAPE(2, 3), (double[]){0, 0, 0, 0, 0, 0}, 0);
    assert_error(ag_dropout(x, -0.1, true, NULL), AG_ERR_INVALID_ARG, "between 0 and 1");
    assert_error(ag_dropout(x, 1.5, false, NULL), AG_ERR_INVALID_ARG, "1.5");
    assert_error(ag_dropout(x, NAN, true, NULL), AG_ERR_INVALID_ARG, "between 0 and 1");
    assert_error(ag_dropout(ag_ones(AG_I64, 1, TU_SHAPE(3)), 0.5, true, NULL), AG_ERR_DTYPE,
                 "floating point");
}
END_TEST

/* ---- the kernels' parallel paths against composites ---- */

/* Layer norm over the last dim in plain ag ops. */
static ag_tensor *layer_norm_composite(ag_tensor *x, double eps) {
    ag_tensor *xc = ag_sub(x, ag_mean(x, 1, (int[]){-1}, true));
    ag_tensor *var = ag_mean(ag_mul(xc, xc), 1, (int[]){-1}, true);
    return ag_mul(xc, ag_rsqrt(ag_add_scalar(var, eps)));
}

START_TEST(large_inputs_match_composites) {
    /* Above the kernels' parallel threshold, offset by 100 to test the two-pass variance. */
    ag_generator *gen = ag_generator_new(11);
    ag_tensor *x = ag_add_scalar(ag_randn(gen, AG_F32, 2, TU_SHAPE(256, 512)), 100);
    ag_tensor *logits = ag_mul_scalar(ag_randn(gen, AG_F64, 2, TU_SHAPE(600, 100)), 3);
    ag_tensor *u = ag_rand(gen, AG_F64, 1, TU_SHAPE(600));
    ag_generator_free(gen);
    ag_tensor *ref = layer_norm_composite(ag_to_dtype(x, AG_F64), 1e-5);
    ck_assert_double_le(tu_max_abs_diff(ag_layer_norm(x, 1, NULL, NULL, 1e-5), ref), 1e-4);
    /* Targets from u; every 7th ignored. */
    int64_t t[600];
    double uv[600];
    ck_assert_int_eq(tu_read(u, uv, 600), AG_OK);
    for (int i = 0; i < 600; i++) t[i] = i % 7 == 0 ? -100 : (int64_t)(uv[i] * 100);
    ag_tensor *target = i64(1, TU_SHAPE(600), t);
    ag_cross_entropy_options o = ce_opts(AG_REDUCTION_NONE, -100, 0);
    ag_tensor *nll = ag_neg(ag_gather(ag_log_softmax(logits, 1), 1,
                                      ag_unsqueeze(ag_clamp(target, true, 0, false, 0), 1)));
    ag_tensor *keep = ag_unsqueeze(ag_to_dtype(ag_ne(target, ag_scalar(AG_I64, -100)), AG_F64), 1);
    ck_assert_double_le(
        tu_max_abs_diff(ag_cross_entropy(logits, target, &o), ag_squeeze(ag_mul(nll, keep), 1)),
        1e-10);
}
END_TEST

/* ---- errors ---- */

START_TEST(error_cases) {
    ag_tensor *x = tu_pattern(2, TU_SHAPE(3, 4), 1.3, 0.5, 2);
    ag_tensor *w4 = tu_pattern(1, TU_SHAPE(4), 0.8, 1.0, 1);
    ag_tensor *xi = ag_ones(AG_I64, 2, TU_SHAPE(3, 4));
    /* linear */
    assert_error(ag_linear(x, tu_pattern(2, TU_SHAPE(2, 3), 1, 0, 1), NULL), AG_ERR_SHAPE,
                 "[3, 4]");
    assert_error(ag_linear(x, tu_pattern(2, TU_SHAPE(2, 3), 1, 0, 1), NULL), AG_ERR_SHAPE,
                 "[2, 3]");
    assert_error(ag_linear(x, tu_pattern(2, TU_SHAPE(2, 4), 1, 0, 1), w4), AG_ERR_SHAPE,
                 "bias [4] does not fit weight [2, 4]");
    assert_error(ag_linear(NULL, x, NULL), AG_ERR_INVALID_ARG, "NULL");
    /* layer_norm */
    assert_error(ag_layer_norm(x, 0, NULL, NULL, 1e-5), AG_ERR_INVALID_ARG, "[3, 4]");
    assert_error(ag_layer_norm(x, 3, NULL, NULL, 1e-5), AG_ERR_INVALID_ARG, "last 3 dims");
    assert_error(ag_layer_norm(x, 1, tu_pattern(1, TU_SHAPE(3), 1, 0, 1), NULL, 1e-5), AG_ERR_SHAPE,
                 "weight of shape [3] and normalized_shape = [4]");
    assert_error(ag_layer_norm(x, 2, NULL, w4, 1e-5), AG_ERR_SHAPE,
                 "bias of shape [4] and normalized_shape = [3, 4]");
    assert_error(ag_layer_norm(x, 1, ag_to_dtype(w4, AG_F32), NULL, 1e-5), AG_ERR_DTYPE, "float32");
    assert_error(ag_layer_norm(xi, 1, NULL, NULL, 1e-5), AG_ERR_DTYPE, "floating point");
    assert_error(ag_layer_norm(NULL, 1, NULL, NULL, 1e-5), AG_ERR_INVALID_ARG, "NULL");
    /* cross_entropy: targets out of range name the target and the number of classes */
    ag_tensor *logits = tu_pattern(2, TU_SHAPE(4, 5), 0.77, 0.3, 2);
    ag_tensor *bad = i64(1, TU_SHAPE(4), (int64_t[]){1, 12, 0, 0});
    assert_error(ag_cross_entropy(logits, bad, NULL), AG_ERR_INDEX, "Target 12 is out of bounds");
    assert_error(ag_cross_entropy(logits, bad, NULL), AG_ERR_INDEX, "5 classes");
    assert_error(ag_cross_entropy(logits, i64(1, TU_SHAPE(4), (int64_t[]){1, 2, -1, 0}), NULL),
                 AG_ERR_INDEX, "Target -1 is out of bounds");
    assert_error(ag_cross_entropy(logits, i64(1, TU_SHAPE(4), (int64_t[]){5, 2, 1, 0}), NULL),
                 AG_ERR_INDEX, "Target 5");
    ag_cross_entropy_options o = ce_opts(AG_REDUCTION_MEAN, 3, 0);
    assert_error(ag_cross_entropy(logits, i64(1, TU_SHAPE(4), (int64_t[]){-100, 2, 1, 0}), &o),
                 AG_ERR_INDEX, "Target -100");
    assert_error(ag_cross_entropy(logits, i64(1, TU_SHAPE(3), (int64_t[]){1, 2, 3}), NULL),
                 AG_ERR_SHAPE, "target [3] does not fit logits [4, 5]");
    assert_error(ag_cross_entropy(tu_pattern(3, TU_SHAPE(2, 3, 4), 1, 0, 1),
                                  i64(2, TU_SHAPE(2, 3), (int64_t[]){0, 0, 0, 0, 0, 0}), NULL),
                 AG_ERR_SHAPE, "target [2, 3] does not fit logits [2, 3, 4]");
    assert_error(ag_cross_entropy(logits, ag_ones(AG_F64, 1, TU_SHAPE(4)), NULL), AG_ERR_SHAPE,
                 "probability target [4] must have the logits' shape [4, 5]");
    assert_error(ag_cross_entropy(xi, i64(1, TU_SHAPE(3), (int64_t[]){0, 0, 0}), NULL),
                 AG_ERR_DTYPE, "floating point logits");
    assert_error(ag_cross_entropy(ag_scalar(AG_F64, 1), ag_scalar(AG_I64, 0), NULL), AG_ERR_SHAPE,
                 "class dim");
    o = ce_opts(AG_REDUCTION_MEAN, -100, 1.5);
    assert_error(ag_cross_entropy(logits, bad, &o), AG_ERR_INVALID_ARG, "label_smoothing");
    o = ce_opts((ag_reduction)7, -100, 0);
    assert_error(ag_cross_entropy(logits, bad, &o), AG_ERR_INVALID_ARG, "reduction");
    assert_error(ag_cross_entropy(NULL, bad, NULL), AG_ERR_INVALID_ARG, "NULL");
    /* bce_with_logits */
    assert_error(ag_bce_with_logits(x, ag_ones(AG_F64, 1, TU_SHAPE(4)), NULL, AG_REDUCTION_MEAN),
                 AG_ERR_SHAPE, "Target size [4] must be the same as input size [3, 4]");
    assert_error(ag_bce_with_logits(x, x, ag_ones(AG_F64, 1, TU_SHAPE(3)), AG_REDUCTION_MEAN),
                 AG_ERR_SHAPE, "pos_weight [3]");
    assert_error(ag_bce_with_logits(x, xi, NULL, AG_REDUCTION_MEAN), AG_ERR_DTYPE, "target");
    assert_error(ag_bce_with_logits(x, x, NULL, (ag_reduction)-1), AG_ERR_INVALID_ARG, "reduction");
    /* mse_loss */
    assert_error(ag_mse_loss(x, ag_ones(AG_F64, 1, TU_SHAPE(3)), AG_REDUCTION_MEAN), AG_ERR_SHAPE,
                 "[3]");
    assert_error(ag_mse_loss(xi, xi, AG_REDUCTION_SUM), AG_ERR_DTYPE, "int64");
    assert_error(ag_mse_loss(x, NULL, AG_REDUCTION_SUM), AG_ERR_INVALID_ARG, "NULL");
    /* embedding */
    ag_tensor *table = tu_pattern(2, TU_SHAPE(5, 3), 0.35, -0.6, 1);
    assert_error(ag_embedding(i64(1, TU_SHAPE(2), (int64_t[]){1, 5}), table), AG_ERR_INDEX,
                 "index 5 is out of range");
    assert_error(ag_embedding(i64(1, TU_SHAPE(2), (int64_t[]){-1, 0}), table), AG_ERR_INDEX,
                 "weight [5, 3]");
    assert_error(ag_embedding(x, table), AG_ERR_DTYPE, "int64 indices");
    assert_error(ag_embedding(i64(1, TU_SHAPE(1), (int64_t[]){0}), w4), AG_ERR_SHAPE, "[4]");
}
END_TEST

/* ---- gradcheck and gradgradcheck ---- */

enum gc_kind {
    GC_LN_AFFINE,
    GC_LN_2DIMS_TRANSPOSED,
    GC_LN_BIAS_ONLY,
    GC_LN_1D,
    GC_CE_MEAN,
    GC_CE_NCD_SMOOTH_IGNORE,
    GC_CE_TRANSPOSED_SUM,
    GC_CE_UNBATCHED_NONE,
    GC_CE_PROB_SMOOTH,
    GC_BCE_POS_WEIGHT,
    GC_BCE_NONE,
    GC_MSE_MEAN,
    GC_MSE_BROADCAST_SUM,
    GC_LINEAR,
    GC_LINEAR_1D,
    GC_EMBEDDING,
};

/* One case: the function and the shapes of its float64 inputs (all requiring grad). */
typedef struct gc_case {
    enum gc_kind kind;
    int n_in;
    int ndim[3];
    int64_t shape[3][3];
} gc_case;

#define SHAPES(n, ...) .n_in = n, __VA_ARGS__
static const gc_case gc_cases[] = {
    {GC_LN_AFFINE, SHAPES(3, .ndim = {2, 1, 1}, .shape = {{3, 4}, {4}, {4}})},
    {GC_LN_2DIMS_TRANSPOSED, SHAPES(2, .ndim = {3, 2}, .shape = {{4, 3, 2}, {3, 4}})},
    {GC_LN_BIAS_ONLY, SHAPES(2, .ndim = {2, 1}, .shape = {{2, 5}, {5}})},
    {GC_LN_1D, SHAPES(1, .ndim = {1}, .shape = {{6}})},
    {GC_CE_MEAN, SHAPES(1, .ndim = {2}, .shape = {{4, 5}})},
    {GC_CE_NCD_SMOOTH_IGNORE, SHAPES(1, .ndim = {3}, .shape = {{2, 3, 4}})},
    {GC_CE_TRANSPOSED_SUM, SHAPES(1, .ndim = {2}, .shape = {{5, 4}})},
    {GC_CE_UNBATCHED_NONE, SHAPES(1, .ndim = {1}, .shape = {{5}})},
    {GC_CE_PROB_SMOOTH, SHAPES(2, .ndim = {2, 2}, .shape = {{3, 4}, {3, 4}})},
    {GC_BCE_POS_WEIGHT, SHAPES(3, .ndim = {2, 2, 1}, .shape = {{2, 3}, {2, 3}, {3}})},
    {GC_BCE_NONE, SHAPES(1, .ndim = {1}, .shape = {{5}})},
    {GC_MSE_MEAN, SHAPES(2, .ndim = {2, 2}, .shape = {{3, 4}, {3, 4}})},
    {GC_MSE_BROADCAST_SUM, SHAPES(2, .ndim = {2, 1}, .shape = {{3, 1}, {4}})},
    {GC_LINEAR, SHAPES(3, .ndim = {2, 2, 1}, .shape = {{2, 3}, {4, 3}, {4}})},
    {GC_LINEAR_1D, SHAPES(2, .ndim = {1, 2}, .shape = {{3}, {2, 3}})},
    {GC_EMBEDDING, SHAPES(1, .ndim = {2}, .shape = {{5, 3}})},
};

static ag_tensor *gc_fn(ag_tensor *const *in, void *user) {
    const gc_case *c = user;
    ag_cross_entropy_options o = ag_cross_entropy_defaults();
    switch (c->kind) {
    case GC_LN_AFFINE:
        return ag_layer_norm(in[0], 1, in[1], in[2], 1e-5);
    case GC_LN_2DIMS_TRANSPOSED:
        return ag_layer_norm(ag_transpose(in[0], 0, 2), 2, in[1], NULL, 1e-5);
    case GC_LN_BIAS_ONLY:
        return ag_layer_norm(in[0], 1, NULL, in[1], 1e-3);
    case GC_LN_1D:
        return ag_layer_norm(in[0], 1, NULL, NULL, 1e-5);
    case GC_CE_MEAN:
        return ag_cross_entropy(in[0], i64(1, TU_SHAPE(4), (int64_t[]){1, 0, 4, 2}), &o);
    case GC_CE_NCD_SMOOTH_IGNORE:
        o = ce_opts(AG_REDUCTION_MEAN, -100, 0.1);
        return ag_cross_entropy(
            in[0], i64(2, TU_SHAPE(2, 4), (int64_t[]){0, 2, -100, 1, 2, 0, 0, -100}), &o);
    case GC_CE_TRANSPOSED_SUM:
        o = ce_opts(AG_REDUCTION_SUM, 3, 0.2);
        return ag_cross_entropy(ag_transpose(in[0], 0, 1),
                                i64(1, TU_SHAPE(4), (int64_t[]){1, 3, 3, 0}), &o);
    case GC_CE_UNBATCHED_NONE:
        o = ce_opts(AG_REDUCTION_NONE, -100, 0);
        return ag_cross_entropy(in[0], ag_scalar(AG_I64, 2), &o);
    case GC_CE_PROB_SMOOTH:
        o = ce_opts(AG_REDUCTION_MEAN, -100, 0.2);
        return ag_cross_entropy(in[0], in[1], &o);
    case GC_BCE_POS_WEIGHT:
        return ag_bce_with_logits(in[0], in[1], in[2], AG_REDUCTION_MEAN);
    case GC_BCE_NONE:
        return ag_bce_with_logits(in[0], ag_from_f64((double[]){0, 1, 0.3, 1, 0.5}, 1, TU_SHAPE(5)),
                                  NULL, AG_REDUCTION_NONE);
    case GC_MSE_MEAN:
        return ag_mse_loss(in[0], in[1], AG_REDUCTION_MEAN);
    case GC_MSE_BROADCAST_SUM:
        return ag_mse_loss(in[0], in[1], AG_REDUCTION_SUM);
    case GC_LINEAR:
        return ag_linear(in[0], in[1], in[2]);
    case GC_LINEAR_1D:
        return ag_linear(in[0], in[1], NULL);
    case GC_EMBEDDING:
        return ag_embedding(i64(2, TU_SHAPE(2, 2), (int64_t[]){4, 0, 2, 4}), in[0]);
    }
    return NULL;
}

START_TEST(gradcheck_and_gradgradcheck) {
    const gc_case *c = &gc_cases[_i];
    ag_generator *gen = ag_generator_new(500 + (uint64_t)_i);
    ag_tensor *in[3];
    for (int i = 0; i < c->n_in; i++) in[i] = leaf(ag_randn(gen, AG_F64, c->ndim[i], c->shape[i]));
    ag_generator_free(gen);
    ag_gradcheck_options opt = ag_gradcheck_defaults();
    ck_assert_msg(ag_gradcheck(gc_fn, (void *)c, c->n_in, in, &opt) == AG_OK,
                  "case %d gradcheck: %s", _i, ag_last_error());
    ck_assert_msg(ag_gradgradcheck(gc_fn, (void *)c, c->n_in, in, &opt) == AG_OK,
                  "case %d gradgradcheck: %s", _i, ag_last_error());
}
END_TEST

/* The functions clean up after themselves when no scope is open: run with LeakSanitizer,
 * a leaked intermediate fails the suite. */
START_TEST(no_scope_no_leak) {
    ag_scope_end(tu_fixture_scope);
    ag_tensor *x = ag_ones(AG_F64, 2, TU_SHAPE(2, 3)), *w = ag_ones(AG_F64, 2, TU_SHAPE(4, 3));
    ag_tensor *b = ag_ones(AG_F64, 1, TU_SHAPE(3)), *t = ag_zeros(AG_I64, 1, TU_SHAPE(2));
    ag_tensor *idx = ag_zeros(AG_I64, 1, TU_SHAPE(2)), *pw = ag_ones(AG_F64, 1, TU_SHAPE(3));
    ck_assert_int_eq(ag_set_requires_grad(x, true), AG_OK);
    ag_cross_entropy_options smooth = ce_opts(AG_REDUCTION_MEAN, -100, 0.1);
    ag_tensor *results[] = {
        ag_linear(x, w, NULL),
        ag_layer_norm(x, 1, b, b, 1e-5),
        ag_dropout(x, 0.5, true, NULL),
        ag_dropout(x, 1, true, NULL),
        ag_dropout(x, 0.5, false, NULL),
        ag_embedding(idx, x),
        ag_mse_loss(x, b, AG_REDUCTION_MEAN),
        ag_cross_entropy(x, t, &smooth),
        ag_cross_entropy(x, x, &smooth),
        ag_bce_with_logits(x, x, pw, AG_REDUCTION_SUM),
    };
    ag_tensor *loss = NULL;
    for (size_t i = 0; i < sizeof results / sizeof results[0]; i++) {
        ck_assert_msg(results[i] != NULL, "result %zu: %s", i, ag_last_error());
        ag_tensor *s = ag_sum(results[i], 0, NULL, false);
        ag_tensor *acc = loss ? ag_add(loss, s) : ag_retain(s);
        ag_release(s);
        ag_release(loss);
        ag_release(results[i]);
        loss = acc;
    }
    ck_assert_int_eq(ag_backward(loss, NULL), AG_OK);
    ck_assert_ptr_nonnull(ag_tensor_grad(x));
    ag_release(loss);
    /* A call failing in its kernel leaks nothing either. */
    ag_tensor *bad = ag_from_i64((int64_t[]){9, 0, 0, 0}, 1, TU_SHAPE(4));
    ck_assert_ptr_null(ag_embedding(bad, w));
    ck_assert_ptr_null(ag_cross_entropy(w, bad, NULL));
    ag_clear_error();
    ag_release(bad);
    ag_tensor *inputs[] = {x, w, b, t, idx, pw};
    for (size_t i = 0; i < sizeof inputs / sizeof inputs[0]; i++) ag_release(inputs[i]);
    tu_fixture_scope = ag_scope_begin();
}
END_TEST

static Suite *nn_functional_suite(void) {
    Suite *s = suite_create("nn_functional");
    TCase *tc = tcase_create("values");
    tcase_add_checked_fixture(tc, tu_scope_setup, tu_scope_teardown);
    tcase_add_test(tc, linear_values);
    tcase_add_test(tc, layer_norm_values);
    tcase_add_test(tc, layer_norm_gradients);
    tcase_add_test(tc, cross_entropy_values);
    tcase_add_test(tc, cross_entropy_probabilities);
    tcase_add_test(tc, cross_entropy_gradient);
    tcase_add_test(tc, bce_with_logits_values);
    tcase_add_test(tc, mse_loss_values);
    tcase_add_test(tc, embedding_values);
    tcase_add_test(tc, dropout_masks);
    tcase_add_test(tc, dropout_identity_and_edges);
    tcase_add_test(tc, large_inputs_match_composites);
    tcase_add_test(tc, error_cases);
    tcase_add_test(tc, no_scope_no_leak);
    suite_add_tcase(s, tc);
    TCase *grads = tcase_create("gradients");
    tcase_add_checked_fixture(grads, tu_scope_setup, tu_scope_teardown);
    tcase_set_timeout(grads, 300);
    tcase_add_loop_test(grads, gradcheck_and_gradgradcheck, 0,
                        (int)(sizeof gc_cases / sizeof gc_cases[0]));
    suite_add_tcase(s, grads);
    return s;
}

int main(void) {
    return tu_run_suite(nn_functional_suite());
}
