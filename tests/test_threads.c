/* Thread safety (docs/threads.md): independent graphs trained on several threads at once give
 * bitwise the results of the same runs on one thread; ag_grad over one shared leaf works from
 * several threads; grad mode, autocast and the last error are per thread; the first ag_init
 * and backend lookups may race; tensors and graphs made on one thread may be used and freed
 * on another; the default generator loses no draws when threads share it.
 * scripts/tsan.sh runs this under ThreadSanitizer.
 *
 * Worker threads never call Check's macros (they would unwind the main thread's stack):
 * they record what they saw and the main thread asserts on it after joining them. */
#include <pthread.h>
#include "ag/optim.h"
#include "test_util.h"

#define N_THREADS   4
#define TRAIN_STEPS 10
/* Values one training run records: two per step, then every parameter. */
#define TRAIN_VALUES 128

/* Starts n threads running fn(arg + i * stride) and joins them all. */
static void run_threads(int n, void *(*fn)(void *), void *arg, size_t stride) {
    pthread_t threads[16];
    ck_assert_int_le(n, 16);
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(pthread_create(&threads[i], NULL, fn, (char *)arg + (size_t)i * stride),
                         0);
    for (int i = 0; i < n; i++) ck_assert_int_eq(pthread_join(threads[i], NULL), 0);
}

/* ---- first use: ag_init and backend lookups from many threads at once ---- */

typedef struct init_job {
    pthread_barrier_t *start;
    ag_status bad_load, init, load;
    int backend, count;
    ag_device device;
    double sum;
} init_job;

static void *init_thread(void *arg) {
    init_job *job = arg;
    pthread_barrier_wait(job->start);
    /* The process's first errors, on every thread at once. */
    int unused;
    job->bad_load = ag_backend_load(NULL, &unused);
    ag_clear_error();
    job->init = ag_init();
    job->load = ag_backend_load("cpu", &job->backend);
    job->count = ag_backend_count();
    job->device = ag_default_device();
    ag_scope *scope = ag_scope_begin();
    job->sum = NAN;
    if (ag_item(ag_sum(ag_full(AG_F32, 1, TU_SHAPE(4), 1.5), 0, NULL, false), &job->sum) != AG_OK)
        job->sum = NAN;
    ag_scope_end(scope);
    return NULL;
}

/* Runs first in the process (its own TCase, added first), so ag_init really races. */
START_TEST(first_init_from_many_threads) {
    enum { N = 8 };
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, N);
    init_job jobs[N];
    for (int i = 0; i < N; i++) jobs[i] = (init_job){.start = &start};
    run_threads(N, init_thread, jobs, sizeof jobs[0]);
    pthread_barrier_destroy(&start);
    for (int i = 0; i < N; i++) {
        ck_assert_msg(jobs[i].init == AG_OK && jobs[i].load == AG_OK, "thread %d: init %s, load %s",
                      i, ag_status_name(jobs[i].init), ag_status_name(jobs[i].load));
        ck_assert_int_eq(jobs[i].bad_load, AG_ERR_INVALID_ARG);
        ck_assert_int_eq(jobs[i].backend, jobs[0].backend);
        ck_assert_int_eq(jobs[i].count, jobs[0].count);
        ck_assert_int_eq(jobs[i].device.backend, jobs[0].device.backend);
        ck_assert_double_eq(jobs[i].sum, 6.0);
    }
    ck_assert_int_ge(jobs[0].count, 1);
}
END_TEST

/* ---- independent training runs ---- */

typedef struct train_job {
    pthread_barrier_t *start; /* NULL when run alone */
    uint64_t seed;
    ag_tensor *x, *target, *big; /* shared by all threads, read only */
    double values[TRAIN_VALUES];
    int n_values;
    ag_status status;
    char error[256];
} train_job;

/* Appends t's values to job->values. */
static ag_status record(train_job *job, const ag_tensor *t) {
    if (!t) return ag_last_status();
    int64_t n = ag_numel(t);
    if (job->n_values + n > TRAIN_VALUES) return AG_ERR_INVALID_ARG;
    ag_status st = tu_read(t, job->values + job->n_values, n);
    job->n_values += (int)n;
    return st;
}

/* TRAIN_STEPS steps of Adam on the MSE of a small classifier (its weights from job->seed)
 * on the shared batch; records each loss, a large elementwise op and reduction on it, and
 * the final parameters. */
static void *train_thread(void *arg) {
    train_job *job = arg;
    job->n_values = 0;
    ag_module *model = tu_classifier(8, job->seed);
    ag_named_tensor params[16];
    int n = model ? ag_module_parameters(model, params, 16) : 0;
    ag_adam_options options = ag_adam_defaults();
    options.lr = 0.05;
    ag_optimizer *opt = n > 0 ? ag_adam_new(n, params, &options) : NULL;
    ag_status st = opt ? AG_OK : ag_last_status();
    bool no_memory = false;
    if (job->start) pthread_barrier_wait(job->start); /* all threads train at once */
    for (int step = 0; step < TRAIN_STEPS && st == AG_OK; step++) {
        ag_scope *scope = ag_scope_begin();
        st = ag_optimizer_zero_grad(opt, true);
        ag_tensor *loss =
            ag_mse_loss(ag_module_forward(model, job->x), job->target, AG_REDUCTION_MEAN);
        if (st == AG_OK) st = ag_backward(loss, NULL);
        if (st == AG_OK) st = ag_optimizer_step(opt);
        if (st == AG_OK) st = record(job, loss);
        /* Large enough for the cpu backend's OpenMP path (docs/threads.md). */
        if (st == AG_OK)
            st = record(job, ag_sum(ag_tanh(ag_mul(job->big, ag_detach(loss))), 0, NULL, false));
        /* The memory counters, read while other threads allocate. */
        no_memory |= ag_memory_allocated(ag_default_device()) == 0;
        ag_scope_end(scope);
    }
    for (int i = 0; i < n && st == AG_OK; i++) st = record(job, params[i].tensor);
    job->status = st != AG_OK ? st : no_memory ? AG_ERR_INVALID_ARG : AG_OK;
    snprintf(job->error, sizeof job->error, "%s",
             st != AG_OK ? ag_last_error()
             : no_memory ? "ag_memory_allocated was 0"
                         : "");
    ag_optimizer_free(opt);
    ag_module_free(model);
    return NULL;
}

START_TEST(independent_training_matches_one_thread) {
    ag_generator *gen = ag_generator_new(2024);
    ag_tensor *x = ag_randn(gen, AG_F32, 2, TU_SHAPE(32, 4));
    ag_tensor *target = ag_randn(gen, AG_F32, 2, TU_SHAPE(32, 3));
    ag_tensor *big = ag_randn(gen, AG_F32, 2, TU_SHAPE(256, 160));
    ag_generator_free(gen);
    ck_assert_ptr_nonnull(big);
    /* The reference: every run alone on this thread. */
    train_job alone[N_THREADS], together[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) {
        alone[i] = (train_job){.seed = 100 + (uint64_t)i, .x = x, .target = target, .big = big};
        together[i] = alone[i];
        train_thread(&alone[i]);
        ck_assert_msg(alone[i].status == AG_OK, "run %d: %s", i, alone[i].error);
    }
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, N_THREADS);
    for (int i = 0; i < N_THREADS; i++) together[i].start = &start;
    run_threads(N_THREADS, train_thread, together, sizeof together[0]);
    pthread_barrier_destroy(&start);
    for (int i = 0; i < N_THREADS; i++) {
        ck_assert_msg(together[i].status == AG_OK, "thread %d: %s", i, together[i].error);
        ck_assert_int_eq(together[i].n_values, alone[i].n_values);
        for (int k = 0; k < alone[i].n_values; k++)
            ck_assert_msg(memcmp(&together[i].values[k], &alone[i].values[k], sizeof(double)) == 0,
                          "thread %d: value %d is %.17g, alone %.17g", i, k, together[i].values[k],
                          alone[i].values[k]);
    }
    /* Different seeds trained different models: the comparison is not vacuous. */
    ck_assert(alone[0].values[0] != alone[1].values[0]);
}
END_TEST

/* ---- one shared leaf, gradients by ag_grad on several threads ---- */

typedef struct grad_job {
    pthread_barrier_t *start; /* NULL when run alone */
    ag_tensor *w;             /* shared leaf that requires grad */
    int index;
    double grad[12];
    ag_status status;
} grad_job;

/* d sum(tanh(x w)) / dw for a batch x of this thread's own, without touching w's .grad. */
static void *grad_thread(void *arg) {
    grad_job *job = arg;
    if (job->start) pthread_barrier_wait(job->start);
    ag_scope *scope = ag_scope_begin();
    double v[20]; /* not tu_pattern: its ck_assert must not run on a worker thread */
    for (int k = 0; k < 20; k++) v[k] = 1.5 * sin((0.3 + job->index) * k + 0.1);
    ag_tensor *x = ag_from_f64(v, 2, TU_SHAPE(5, 4));
    ag_tensor *loss = ag_sum(ag_tanh(ag_matmul(x, job->w)), 0, NULL, false);
    ag_tensor *grad = NULL;
    job->status = ag_grad(1, &loss, 1, &job->w, NULL, false, false, false, &grad);
    if (job->status == AG_OK) job->status = tu_read(grad, job->grad, 12);
    ag_scope_end(scope);
    return NULL;
}

START_TEST(ag_grad_over_a_shared_leaf) {
    ag_tensor *w = tu_pattern(2, TU_SHAPE(4, 3), 0.7, 0.2, 0.8);
    ck_assert_int_eq(ag_set_requires_grad(w, true), AG_OK);
    grad_job alone[N_THREADS], together[N_THREADS];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, N_THREADS);
    for (int i = 0; i < N_THREADS; i++) {
        alone[i] = (grad_job){.w = w, .index = i};
        together[i] = (grad_job){.start = &start, .w = w, .index = i};
        grad_thread(&alone[i]);
        ck_assert_int_eq(alone[i].status, AG_OK);
    }
    run_threads(N_THREADS, grad_thread, together, sizeof together[0]);
    pthread_barrier_destroy(&start);
    for (int i = 0; i < N_THREADS; i++) {
        ck_assert_int_eq(together[i].status, AG_OK);
        ck_assert_msg(memcmp(together[i].grad, alone[i].grad, sizeof alone[i].grad) == 0,
                      "thread %d: gradient differs from the run alone", i);
    }
    ck_assert(alone[0].grad[0] != alone[1].grad[0]);
    ck_assert_ptr_null(ag_tensor_grad(w)); /* ag_grad leaves .grad alone */
}
END_TEST

/* ---- backward into one shared leaf (Hogwild) ---- */

#define PASSES 200

typedef struct backward_job {
    pthread_barrier_t *start;
    ag_tensor *w;     /* the shared leaf */
    ag_status status; /* the first failure, or AG_OK */
} backward_job;

/* PASSES backward passes of sum(w * ones) on the thread's own graphs: each adds exactly 1
 * to every element of the shared w.grad. */
static void *backward_thread(void *arg) {
    backward_job *job = arg;
    pthread_barrier_wait(job->start);
    job->status = AG_OK;
    for (int k = 0; k < PASSES && job->status == AG_OK; k++) {
        ag_scope *scope = ag_scope_begin();
        ag_tensor *ones = ag_full(AG_F64, 2, TU_SHAPE(4, 3), 1.0);
        ag_tensor *loss = ag_sum(ag_mul(job->w, ones), 0, NULL, false);
        job->status = loss ? ag_backward(loss, NULL) : ag_last_status();
        ag_scope_end(scope);
    }
    return NULL;
}

/* ag_backward on several threads into one leaf (PyTorch's Hogwild pattern): no update of
 * .grad may be lost, and ThreadSanitizer must see no race. */
START_TEST(backward_into_a_shared_leaf_from_several_threads) {
    ag_tensor *w = tu_pattern(2, TU_SHAPE(4, 3), 0.7, 0.2, 0.8);
    ck_assert_int_eq(ag_set_requires_grad(w, true), AG_OK);
    backward_job jobs[N_THREADS];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, N_THREADS);
    for (int i = 0; i < N_THREADS; i++) jobs[i] = (backward_job){.start = &start, .w = w};
    run_threads(N_THREADS, backward_thread, jobs, sizeof jobs[0]);
    pthread_barrier_destroy(&start);
    for (int i = 0; i < N_THREADS; i++) ck_assert_int_eq(jobs[i].status, AG_OK);
    double grad[12];
    ck_assert_int_eq(tu_read(ag_tensor_grad(w), grad, 12), AG_OK);
    for (int k = 0; k < 12; k++) ck_assert_double_eq(grad[k], N_THREADS * PASSES);
}
END_TEST

/* ---- per-thread settings and errors ---- */

/* Two threads, "off" and "on", that take turns at barriers so that each runs its ops while
 * the other has changed (or kept) its settings. */
typedef struct pair_job {
    pthread_barrier_t *sync;
    bool off;           /* this thread changes its settings */
    bool requires_grad; /* its op result recorded a graph */
    bool grad_enabled;  /* ag_is_grad_enabled at the end */
    double grad;        /* its leaf's gradient after backward (NAN if none) */
    ag_dtype dtype;     /* the dtype of its matmul under its autocast setting */
    ag_status status;   /* its last status once both threads have failed */
    char error[256];    /* and its message */
} pair_job;

static void *grad_mode_thread(void *arg) {
    pair_job *job = arg;
    if (job->off) ag_set_grad_enabled(false);
    pthread_barrier_wait(job->sync); /* the off thread is in no_grad now */
    ag_scope *scope = ag_scope_begin();
    ag_tensor *leaf = ag_full(AG_F64, 1, TU_SHAPE(3), 2.0);
    ag_set_requires_grad(leaf, true);
    ag_tensor *y = ag_sum(ag_mul(leaf, leaf), 0, NULL, false);
    job->requires_grad = ag_requires_grad(y);
    pthread_barrier_wait(job->sync); /* both recorded (or not) while the other ran */
    job->grad = NAN;
    if (job->requires_grad && ag_backward(y, NULL) == AG_OK)
        ag_item(ag_select(ag_tensor_grad(leaf), 0, 0), &job->grad);
    job->grad_enabled = ag_is_grad_enabled();
    ag_scope_end(scope);
    ag_set_grad_enabled(true);
    return NULL;
}

static void run_pair(void *(*fn)(void *), pair_job jobs[2]) {
    pthread_barrier_t sync;
    pthread_barrier_init(&sync, NULL, 2);
    jobs[0] = (pair_job){.sync = &sync, .off = true};
    jobs[1] = (pair_job){.sync = &sync, .off = false};
    run_threads(2, fn, jobs, sizeof jobs[0]);
    pthread_barrier_destroy(&sync);
}

START_TEST(grad_mode_is_per_thread) {
    pair_job jobs[2];
    run_pair(grad_mode_thread, jobs);
    ck_assert_msg(!jobs[0].requires_grad, "no_grad thread recorded a graph");
    ck_assert(!jobs[0].grad_enabled);
    ck_assert_msg(jobs[1].requires_grad, "the other thread's no_grad stopped this one recording");
    ck_assert(jobs[1].grad_enabled);
    ck_assert_double_eq(jobs[1].grad, 4.0); /* d(sum x*x)/dx = 2x */
    ck_assert(ag_is_grad_enabled());
}
END_TEST

static void *autocast_thread(void *arg) {
    pair_job *job = arg;
    ag_autocast previous = ag_autocast_get();
    if (job->off) ag_autocast_set((ag_autocast){.enabled = true, .dtype = AG_BF16}, &previous);
    pthread_barrier_wait(job->sync);
    ag_scope *scope = ag_scope_begin();
    ag_tensor *a = ag_full(AG_F32, 2, TU_SHAPE(2, 2), 0.5);
    ag_tensor *p = ag_matmul(a, a);
    job->dtype = p ? ag_dtype_of(p) : (ag_dtype)-1;
    ag_scope_end(scope);
    pthread_barrier_wait(job->sync);
    if (job->off) ag_autocast_set(previous, NULL);
    return NULL;
}

START_TEST(autocast_is_per_thread) {
    pair_job jobs[2];
    run_pair(autocast_thread, jobs);
    ck_assert_int_eq(jobs[0].dtype, AG_BF16);
    ck_assert_int_eq(jobs[1].dtype, AG_F32);
    ck_assert(!ag_autocast_get().enabled);
}
END_TEST

/* Both threads fail at once, differently; each must see its own error only. */
static void *error_thread(void *arg) {
    pair_job *job = arg;
    ag_clear_error();
    ag_scope *scope = ag_scope_begin();
    if (job->off)
        ag_add(ag_zeros(AG_F32, 1, TU_SHAPE(3)), ag_zeros(AG_F32, 1, TU_SHAPE(2)));
    else
        ag_select(ag_zeros(AG_F32, 1, TU_SHAPE(3)), 0, 5);
    pthread_barrier_wait(job->sync); /* both have their error now */
    job->status = ag_last_status();
    snprintf(job->error, sizeof job->error, "%s", ag_last_error());
    ag_scope_end(scope);
    ag_clear_error();
    return NULL;
}

START_TEST(errors_are_per_thread) {
    pair_job jobs[2];
    run_pair(error_thread, jobs);
    ck_assert_msg(jobs[0].status == AG_ERR_SHAPE && strstr(jobs[0].error, "add:"),
                  "thread 0 saw %s '%s'", ag_status_name(jobs[0].status), jobs[0].error);
    ck_assert_msg(jobs[1].status == AG_ERR_INDEX && strstr(jobs[1].error, "out of bounds"),
                  "thread 1 saw %s '%s'", ag_status_name(jobs[1].status), jobs[1].error);
    ck_assert_int_eq(ag_last_status(), AG_OK); /* neither shows on the main thread */
    ck_assert_str_eq(ag_last_error(), "");
}
END_TEST

/* ---- tensors handed between threads ---- */

#define HANDOFF_COUNT 200
#define HANDOFF_SLOTS 8

/* A bounded queue of (leaf, result) pairs from a producer thread to a consumer thread. */
typedef struct handoff {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    ag_tensor *leaf[HANDOFF_SLOTS], *result[HANDOFF_SLOTS];
    int head, tail; /* items put and taken so far */
    int made, checked;
} handoff;

/* Makes leaves (values i) and their graphs (2 * leaf) on this thread, hands both over. */
static void *producer(void *arg) {
    handoff *q = arg;
    for (int i = 0; i < HANDOFF_COUNT; i++) {
        ag_tensor *leaf = ag_full(AG_F32, 1, TU_SHAPE(5), i);
        ag_set_requires_grad(leaf, true);
        ag_tensor *result = ag_mul_scalar(leaf, 2);
        pthread_mutex_lock(&q->lock);
        while (q->head - q->tail == HANDOFF_SLOTS) pthread_cond_wait(&q->changed, &q->lock);
        q->leaf[q->head % HANDOFF_SLOTS] = leaf;
        q->result[q->head % HANDOFF_SLOTS] = result;
        q->head++;
        q->made += leaf && result;
        pthread_cond_broadcast(&q->changed);
        pthread_mutex_unlock(&q->lock);
    }
    return NULL;
}

/* Runs backward through each graph on this thread, checks values, frees everything here,
 * and makes tensors of its own from the structs the producer's tensors left behind. */
static void *consumer(void *arg) {
    handoff *q = arg;
    for (int i = 0; i < HANDOFF_COUNT; i++) {
        pthread_mutex_lock(&q->lock);
        while (q->head == q->tail) pthread_cond_wait(&q->changed, &q->lock);
        ag_tensor *leaf = q->leaf[q->tail % HANDOFF_SLOTS];
        ag_tensor *result = q->result[q->tail % HANDOFF_SLOTS];
        q->tail++;
        pthread_cond_broadcast(&q->changed);
        pthread_mutex_unlock(&q->lock);
        ag_scope *scope = ag_scope_begin();
        double value = NAN, grad = NAN, own = NAN;
        ag_item(ag_select(result, 0, 4), &value);
        if (ag_backward(ag_sum(result, 0, NULL, false), NULL) == AG_OK)
            ag_item(ag_select(ag_tensor_grad(leaf), 0, 1), &grad);
        ag_release(result);
        ag_release(leaf);
        ag_item(ag_sum(ag_add_scalar(ag_full(AG_F32, 1, TU_SHAPE(5), i), 1), 0, NULL, false), &own);
        ag_scope_end(scope);
        q->checked += value == 2.0 * i && grad == 2.0 && own == 5.0 * (i + 1);
    }
    return NULL;
}

START_TEST(tensors_made_on_one_thread_are_freed_on_another) {
    handoff q = {.head = 0};
    pthread_mutex_init(&q.lock, NULL);
    pthread_cond_init(&q.changed, NULL);
    pthread_t threads[2];
    ck_assert_int_eq(pthread_create(&threads[0], NULL, producer, &q), 0);
    ck_assert_int_eq(pthread_create(&threads[1], NULL, consumer, &q), 0);
    for (int i = 0; i < 2; i++) ck_assert_int_eq(pthread_join(threads[i], NULL), 0);
    pthread_cond_destroy(&q.changed);
    pthread_mutex_destroy(&q.lock);
    ck_assert_int_eq(q.made, HANDOFF_COUNT);
    ck_assert_int_eq(q.checked, HANDOFF_COUNT);
}
END_TEST

/* A thread that only releases (no scope, no op) keeps the freed structs on its free lists,
 * which must still be freed when it exits: valgrind sees a leak if not (the sanitizer build
 * keeps no free lists). */
#define RELEASE_ONLY_COUNT 64

static void *make_owned(void *arg) {
    ag_tensor **tensors = arg;
    for (int i = 0; i < RELEASE_ONLY_COUNT; i++)
        tensors[i] = ag_full(AG_F32, 1, TU_SHAPE(2), i); /* no scope: owned here */
    return NULL;
}

static void *release_all(void *arg) {
    ag_tensor **tensors = arg;
    for (int i = 0; i < RELEASE_ONLY_COUNT; i++) ag_release(tensors[i]);
    return NULL;
}

START_TEST(a_thread_that_only_releases) {
    ag_tensor *tensors[RELEASE_ONLY_COUNT];
    run_threads(1, make_owned, tensors, 0);
    for (int i = 0; i < RELEASE_ONLY_COUNT; i++) ck_assert_ptr_nonnull(tensors[i]);
    run_threads(1, release_all, tensors, 0);
}
END_TEST

/* ---- the process default generator shared by threads ---- */

#define DRAWS 50

typedef struct draw_job {
    int failures;
} draw_job;

static void *draw_thread(void *arg) {
    draw_job *job = arg;
    for (int i = 0; i < DRAWS; i++) {
        ag_scope *scope = ag_scope_begin();
        job->failures += !ag_rand(NULL, AG_F64, 1, TU_SHAPE(3));
        ag_scope_end(scope);
    }
    return NULL;
}

/* The value the default generator gives after N_THREADS * DRAWS draws of 3 values. */
static double next_after_draws(bool threaded) {
    ag_manual_seed(77);
    draw_job jobs[N_THREADS] = {{0}};
    if (threaded)
        run_threads(N_THREADS, draw_thread, jobs, sizeof jobs[0]);
    else
        for (int i = 0; i < N_THREADS; i++) draw_thread(&jobs[i]);
    for (int i = 0; i < N_THREADS; i++) ck_assert_int_eq(jobs[i].failures, 0);
    double next = NAN;
    ck_assert_int_eq(ag_item(ag_rand(NULL, AG_F64, 0, NULL), &next), AG_OK);
    return next;
}

START_TEST(default_generator_loses_no_draws) {
    double alone = next_after_draws(false);
    double together = next_after_draws(true);
    ck_assert_msg(alone == together, "after the threads' draws: %.17g, on one thread %.17g",
                  together, alone);
}
END_TEST

static Suite *threads_suite(void) {
    Suite *s = suite_create("threads");
    TCase *first = tcase_create("first use");
    tcase_add_test(first, first_init_from_many_threads);
    suite_add_tcase(s, first);
    TCase *tc = tcase_create("threads");
    tcase_add_checked_fixture(tc, tu_scope_setup, tu_scope_teardown);
    tcase_set_timeout(tc, 300); /* ThreadSanitizer runs it several times slower */
    tcase_add_test(tc, independent_training_matches_one_thread);
    tcase_add_test(tc, ag_grad_over_a_shared_leaf);
    tcase_add_test(tc, backward_into_a_shared_leaf_from_several_threads);
    tcase_add_test(tc, grad_mode_is_per_thread);
    tcase_add_test(tc, autocast_is_per_thread);
    tcase_add_test(tc, errors_are_per_thread);
    tcase_add_test(tc, tensors_made_on_one_thread_are_freed_on_another);
    tcase_add_test(tc, a_thread_that_only_releases);
    tcase_add_test(tc, default_generator_loses_no_draws);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    return tu_run_suite(threads_suite());
}
