/* Distributed training (include/ag/dist.h) under `mpirun -np 2`: the MPI communicator's
 * collectives, and DistributedDataParallel against single-process training on the combined
 * batch. Every rank runs every test in the same order, since each holds collectives.
 *
 * `test_dist --dead-rank exit|hang` is the failure case tests/dist_dead_rank.sh runs: rank 1
 * leaves (exits, or stops calling collectives) and rank 0 must fail rather than hang. */
#include <string.h>
#include <unistd.h>
#include "ag/dist.h"
#include "ag/optim.h"
#include "test_util.h"

enum { IN = 4, HIDDEN = 8, OUT = 3, LOCAL_BATCH = 5, STEPS = 4 };

static ag_comm *comm;

/* ---- the communicator ---- */

START_TEST(allreduce_broadcast_barrier_and_iallreduce) {
    ck_assert_int_eq(comm->world_size, 2);
    const double r = comm->rank;
    ag_tensor *f = tu_tensor(AG_F32, 1, TU_SHAPE(3), TU_VALUES(1 + r, 2 * r, -r));
    ck_assert_int_eq(comm->allreduce_sum(comm, f), AG_OK);
    ck_assert(tu_values_are(f, 1, TU_SHAPE(3), TU_VALUES(3, 2, -1), 0, 0, NULL, 0, NULL));
    ag_tensor *d = tu_tensor(AG_F64, 2, TU_SHAPE(2, 2), TU_VALUES(r, r, 0.5, 1e-300 * r));
    ag_comm_request *req = NULL;
    ck_assert_int_eq(comm->iallreduce_sum(comm, d, &req), AG_OK);
    ck_assert_int_eq(comm->wait(comm, req), AG_OK);
    ck_assert(tu_values_are(d, 2, TU_SHAPE(2, 2), TU_VALUES(1, 1, 1, 1e-300), 0, 0, NULL, 0, NULL));
    ag_tensor *b = tu_tensor(AG_F32, 1, TU_SHAPE(2), TU_VALUES(10 + r, 20 + r));
    ck_assert_int_eq(comm->broadcast(comm, b, 1), AG_OK);
    ck_assert(tu_values_are(b, 1, TU_SHAPE(2), TU_VALUES(11, 21), 0, 0, NULL, 0, NULL));
    ck_assert_int_eq(comm->barrier(comm), AG_OK);
}
END_TEST

START_TEST(collective_errors_name_the_operation_and_rank) {
    char want[64];
    snprintf(want, sizeof want, "ag_comm allreduce_sum on rank %d", comm->rank);
    ag_tensor *t = ag_transpose(ag_zeros(AG_F32, 2, TU_SHAPE(2, 3)), 0, 1);
    ck_assert_int_eq(comm->allreduce_sum(comm, t), AG_ERR_INVALID_ARG);
    ck_assert_msg(strstr(ag_last_error(), want) && strstr(ag_last_error(), "contiguous"), "%s",
                  ag_last_error());
    ag_tensor *h = ag_to_dtype(ag_zeros(AG_F32, 1, TU_SHAPE(2)), AG_F16);
    ck_assert_int_eq(comm->broadcast(comm, h, 0), AG_ERR_DTYPE);
    ck_assert_msg(strstr(ag_last_error(), "float16"), "%s", ag_last_error());
    ck_assert_int_eq(comm->broadcast(comm, ag_zeros(AG_F32, 1, TU_SHAPE(2)), 2),
                     AG_ERR_INVALID_ARG);
}
END_TEST

/* ---- DistributedDataParallel ---- */

/* Linear(IN, HIDDEN), GELU, Linear(HIDDEN, OUT) initialised from seed. */
static ag_module *mlp_new(uint64_t seed) {
    ag_generator *gen = ag_generator_new(seed);
    ag_module *layers[3];
    layers[0] = ag_linear_new(IN, HIDDEN, true, gen);
    layers[1] = ag_gelu_new(false);
    layers[2] = ag_linear_new(HIDDEN, OUT, true, gen);
    ag_generator_free(gen);
    ag_module *m = ag_sequential_new(3, layers);
    ck_assert_ptr_nonnull(m);
    return m;
}

/* Inputs and targets of the combined batch of both ranks for step `step`: rows
 * [0, LOCAL_BATCH) are rank 0's, the rest rank 1's. */
static void combined_batch(int step, ag_tensor **x, ag_tensor **y) {
    *x = tu_pattern(2, TU_SHAPE(2 * LOCAL_BATCH, IN), 0.7, step, 1.0);
    *y = tu_pattern(2, TU_SHAPE(2 * LOCAL_BATCH, OUT), 1.3, 0.5 * step, 0.5);
    *x = ag_to_dtype(*x, AG_F32);
    *y = ag_to_dtype(*y, AG_F32);
}

/* Forward, mean squared error and backward of rows [start, end) of a batch, the loss
 * divided by divisor (gradient accumulation). */
static void backward_rows(ag_module *m, ag_tensor *x, ag_tensor *y, int64_t start, int64_t end,
                          double divisor) {
    ag_tensor *out = ag_module_forward(m, ag_slice(x, 0, start, end, 1));
    ag_tensor *loss = ag_mse_loss(out, ag_slice(y, 0, start, end, 1), AG_REDUCTION_MEAN);
    ck_assert_int_eq(ag_backward(ag_mul_scalar(loss, 1.0 / divisor), NULL), AG_OK);
}

/* All parameters of m flattened into a new float array. */
static float *flat_params(const ag_module *m, int64_t *count) {
    ag_named_tensor p[8];
    int n = ag_module_parameters(m, p, 8);
    int64_t total = 0;
    for (int i = 0; i < n; i++) total += ag_numel(p[i].tensor);
    float *v = malloc((size_t)total * sizeof *v);
    ck_assert_ptr_nonnull(v);
    int64_t at = 0;
    for (int i = 0; i < n; i++) {
        size_t bytes = (size_t)ag_numel(p[i].tensor) * sizeof *v;
        ck_assert_int_eq(ag_to_host(p[i].tensor, v + at, bytes), AG_OK);
        at += ag_numel(p[i].tensor);
    }
    *count = total;
    return v;
}

/* Rows [a, b) of each rank's half of a combined batch t, rank 0's first. */
static ag_tensor *rows_of_both_halves(ag_tensor *t, int64_t a, int64_t b) {
    ag_tensor *halves[2] = {ag_slice(t, 0, a, b, 1),
                            ag_slice(t, 0, LOCAL_BATCH + a, LOCAL_BATCH + b, 1)};
    return ag_cat(2, halves, 0);
}

/* Single-process training on the combined batch: STEPS steps of SGD, each of `micro`
 * micro-batches whose losses are divided by micro. */
static ag_module *train_reference(int micro) {
    ag_module *m = mlp_new(0);
    ag_named_tensor p[8];
    int n = ag_module_parameters(m, p, 8);
    ag_sgd_options sgd = ag_sgd_defaults(0.1);
    ag_optimizer *opt = ag_sgd_new(n, p, &sgd);
    for (int s = 0; s < STEPS; s++) {
        ag_scope *scope = ag_scope_begin();
        ag_tensor *x, *y;
        combined_batch(s, &x, &y);
        /* Micro-batch k takes its share of each rank's rows, so the data are those of the
         * distributed run: rows [k*L/micro, (k+1)*L/micro) of both halves. */
        for (int k = 0; k < micro; k++) {
            int64_t a = k * LOCAL_BATCH / micro, b = (k + 1) * LOCAL_BATCH / micro;
            backward_rows(m, rows_of_both_halves(x, a, b), rows_of_both_halves(y, a, b), 0,
                          2 * (b - a), micro);
        }
        ck_assert_int_eq(ag_optimizer_step(opt), AG_OK);
        ck_assert_int_eq(ag_optimizer_zero_grad(opt, true), AG_OK);
        ag_scope_end(scope);
    }
    ag_optimizer_free(opt);
    return m;
}

/* The same training with DDP, each rank on its half of every batch. Rank 1 starts from
 * other weights, which the broadcast of ag_ddp_new must replace. no_sync_micro: micro-batches
 * before the last skip communication; otherwise every micro-batch is reduced. */
static ag_module *train_ddp(int micro, bool no_sync_micro, const ag_ddp_options *options,
                            int *buckets) {
    ag_module *m = mlp_new(comm->rank == 0 ? 0 : 99);
    ag_ddp *ddp = ag_ddp_new(m, comm, options);
    ck_assert_msg(ddp != NULL, "%s", ag_last_error());
    if (buckets) *buckets = ag_ddp_bucket_count(ddp);
    ag_named_tensor p[8];
    int n = ag_module_parameters(m, p, 8);
    ag_sgd_options sgd = ag_sgd_defaults(0.1);
    ag_optimizer *opt = ag_sgd_new(n, p, &sgd);
    const int64_t mine = comm->rank * LOCAL_BATCH;
    for (int s = 0; s < STEPS; s++) {
        ag_scope *scope = ag_scope_begin();
        ag_tensor *x, *y;
        combined_batch(s, &x, &y);
        for (int k = 0; k < micro; k++) {
            int64_t a = k * LOCAL_BATCH / micro, b = (k + 1) * LOCAL_BATCH / micro;
            bool last = k == micro - 1;
            ag_ddp_no_sync(ddp, no_sync_micro && !last);
            backward_rows(m, x, y, mine + a, mine + b, micro);
            ck_assert_msg(ag_ddp_finish(ddp) == AG_OK, "%s", ag_last_error());
        }
        ck_assert_int_eq(ag_optimizer_step(opt), AG_OK);
        ck_assert_int_eq(ag_optimizer_zero_grad(opt, true), AG_OK);
        ag_scope_end(scope);
    }
    ag_optimizer_free(opt);
    ag_ddp_free(ddp);
    return m;
}

/* Asserts that m's parameters are bit-identical on every rank and within float tolerance
 * of the reference's. */
static void assert_replicas_match(const ag_module *m, const ag_module *reference) {
    int64_t n, n_ref;
    float *mine = flat_params(m, &n), *want = flat_params(reference, &n_ref);
    ck_assert_int_eq(n, n_ref);
    /* Rank 0's values on every rank, to compare bits. */
    ag_tensor *root = ag_from_f32(mine, 1, TU_SHAPE(n));
    ck_assert_int_eq(comm->broadcast(comm, root, 0), AG_OK);
    float *root_values = malloc((size_t)n * sizeof *root_values);
    ck_assert_ptr_nonnull(root_values);
    ck_assert_int_eq(ag_to_host(root, root_values, (size_t)n * sizeof *root_values), AG_OK);
    ck_assert_msg(memcmp(root_values, mine, (size_t)n * sizeof *mine) == 0,
                  "rank %d's parameters differ from rank 0's", comm->rank);
    free(root_values);
    for (int64_t i = 0; i < n; i++)
        ck_assert_msg(tu_close(mine[i], want[i], 1e-5, 1e-4), "parameter %lld: ddp %g, single %g",
                      (long long)i, mine[i], want[i]);
    free(mine);
    free(want);
}

START_TEST(ddp_equals_single_process_on_the_combined_batch) {
    ag_module *reference = train_reference(1);
    int buckets = 0;
    ag_module *m = train_ddp(1, false, NULL, &buckets);
    ck_assert_int_eq(buckets, 1); /* 25 MB holds this model */
    assert_replicas_match(m, reference);
    ag_module_free(m);
    ag_module_free(reference);
}
END_TEST

START_TEST(small_buckets_give_the_same_result) {
    ag_module *reference = train_reference(1);
    ag_ddp_options o = ag_ddp_defaults();
    o.bucket_cap_mb = 100.0 / (1024 * 1024); /* 100 bytes: about one parameter each */
    int buckets = 0;
    ag_module *m = train_ddp(1, false, &o, &buckets);
    ck_assert_int_ge(buckets, 3);
    assert_replicas_match(m, reference);
    ag_module_free(m);
    ag_module_free(reference);
}
END_TEST

START_TEST(no_sync_accumulation_equals_synchronous_training) {
    ag_module *reference = train_reference(2);
    ag_module *accumulated = train_ddp(2, true, NULL, NULL);
    ag_module *synchronous = train_ddp(2, false, NULL, NULL);
    assert_replicas_match(accumulated, reference);
    assert_replicas_match(synchronous, reference);
    ag_module_free(accumulated);
    ag_module_free(synchronous);
    ag_module_free(reference);
}
END_TEST

/* A loss that uses only the first layer of a two-layer Sequential. */
static void backward_first_layer_only(ag_module *m) {
    ag_named_tensor p[4];
    ck_assert_int_eq(ag_module_parameters(m, p, 4), 4);
    ag_tensor *x = ag_ones(AG_F32, 2, TU_SHAPE(2, IN));
    ag_tensor *out = ag_linear(ag_mul_scalar(x, 1.0 + comm->rank), p[0].tensor, p[1].tensor);
    ck_assert_int_eq(ag_backward(ag_sum(out, 0, NULL, false), NULL), AG_OK);
}

static ag_module *two_layers(void) {
    ag_module *layers[2] = {ag_linear_new(IN, OUT, true, NULL), ag_linear_new(OUT, 2, true, NULL)};
    return ag_sequential_new(2, layers);
}

START_TEST(unused_parameters_are_named_unless_allowed) {
    ag_module *m = two_layers();
    ag_ddp *ddp = ag_ddp_new(m, comm, NULL);
    ck_assert_ptr_nonnull(ddp);
    backward_first_layer_only(m);
    ck_assert_int_eq(ag_ddp_finish(ddp), AG_ERR_NO_GRAD);
    ck_assert_msg(strstr(ag_last_error(), "Expected to have finished reduction") &&
                      strstr(ag_last_error(), "did not receive grad: 1.weight 1.bias"),
                  "%s", ag_last_error());
    ag_ddp_free(ddp);

    ag_ddp_options o = ag_ddp_defaults();
    o.find_unused_parameters = true;
    ddp = ag_ddp_new(m, comm, &o);
    ck_assert_ptr_nonnull(ddp);
    ag_named_tensor p[4];
    ag_module_parameters(m, p, 4);
    for (int i = 0; i < 4; i++) ag_set_grad(p[i].tensor, NULL);
    backward_first_layer_only(m);
    ck_assert_msg(ag_ddp_finish(ddp) == AG_OK, "%s", ag_last_error());
    /* The inputs were 1 on rank 0 and 2 on rank 1: the bias gradient is the row count (2)
     * either way, the weight's the mean input sum 2 * (1 + 2) / 2 = 3. */
    ck_assert(tu_values_are(ag_tensor_grad(p[1].tensor), 1, TU_SHAPE(OUT), TU_VALUES(2, 2, 2), 0, 0,
                            NULL, 0, NULL));
    double w = 0;
    ck_assert_int_eq(ag_item(ag_select(ag_select(ag_tensor_grad(p[0].tensor), 0, 0), 0, 0), &w),
                     AG_OK);
    ck_assert(tu_close(w, 3, 1e-6, 0));
    ck_assert_ptr_null(ag_tensor_grad(p[2].tensor)); /* unused everywhere: stays None */
    ag_ddp_free(ddp);
    ag_module_free(m);
}
END_TEST

/* --dead-rank: rank 1 leaves, rank 0 all-reduces. "exit": rank 1 exits without finalising
 * MPI, which mpirun answers by ending the whole job; "hang": rank 1 stays alive but stops
 * calling collectives, and rank 0's AG_DIST_TIMEOUT turns the wait into an error. Either
 * way the job must end with a non-zero status and a message instead of hanging. */
static int dead_rank(const char *how) {
    if (comm->rank == 1) {
        if (strcmp(how, "exit") == 0) _exit(3);
        sleep(60);
        return 0;
    }
    ag_tensor *t = ag_ones(AG_F32, 1, TU_SHAPE(4));
    for (int i = 0; i < 100; i++) {
        if (comm->allreduce_sum(comm, t) != AG_OK) {
            fprintf(stderr, "test_dist: %s\n", ag_last_error());
            ag_dist_abort(1);
        }
        usleep(100000);
    }
    fprintf(stderr, "test_dist: rank 0 never noticed the dead rank\n");
    return 0;
}

static Suite *dist_suite(void) {
    Suite *s = suite_create("dist");
    TCase *tc = tcase_create("dist");
    tcase_add_checked_fixture(tc, tu_scope_setup, tu_scope_teardown);
    tcase_add_test(tc, allreduce_broadcast_barrier_and_iallreduce);
    tcase_add_test(tc, collective_errors_name_the_operation_and_rank);
    tcase_add_test(tc, ddp_equals_single_process_on_the_combined_batch);
    tcase_add_test(tc, small_buckets_give_the_same_result);
    tcase_add_test(tc, no_sync_accumulation_equals_synchronous_training);
    tcase_add_test(tc, unused_parameters_are_named_unless_allowed);
    suite_add_tcase(s, tc);
    return s;
}

int main(int argc, char **argv) {
    if (ag_dist_init(&argc, &argv) != AG_OK || !(comm = ag_comm_mpi_new())) {
        fprintf(stderr, "test_dist: %s\n", ag_last_error());
        return EXIT_FAILURE;
    }
    int rc = argc == 3 && strcmp(argv[1], "--dead-rank") == 0 ? dead_rank(argv[2])
                                                              : tu_run_suite(dist_suite());
    ag_comm_free(comm);
    ag_dist_finalize();
    return rc;
}
