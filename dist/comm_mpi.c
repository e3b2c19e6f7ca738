/* The process group and the MPI communicator (include/ag/dist.h).
 *
 * Every collective, blocking ones included, is started non-blocking and completed by a
 * polling wait with a deadline: MPI's own blocking calls would hang forever when a peer
 * stops answering, and a training job that fails with a message is better than one that
 * hangs. MPI_ERRORS_RETURN turns MPI's failures into return codes, which become ag errors
 * naming the operation and the rank. */
#include <mpi.h>
#include <stdlib.h>
#include <time.h>
#include "ag/dist.h"
#include "../core/internal.h"

/* Seconds a collective may take before it is reported as hung (AG_DIST_TIMEOUT). */
#define DEFAULT_TIMEOUT_S 300.0

static bool we_initialised; /* ag_dist_init called MPI_Init, so finalize is ours */
static int world_rank = 0, world_size = 1;

/* Turns an MPI error code into an ag error naming the operation and this rank. */
static ag_status mpi_error(const char *op, int code) {
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) snprintf(text, sizeof text, "?");
    return ag__error(AG_ERR_INTERNAL, "ag_comm %s on rank %d of %d: MPI error %d: %s", op,
                     world_rank, world_size, code, text);
}

ag_status ag_dist_init(int *argc, char ***argv) {
    int initialised = 0;
    MPI_Initialized(&initialised);
    if (!initialised) {
        int rc = MPI_Init(argc, argv);
        if (rc != MPI_SUCCESS) return mpi_error("init", rc);
        we_initialised = true;
    }
    /* Errors come back as codes (then ag errors) instead of aborting the job inside MPI. */
    int rc = MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    if (rc == MPI_SUCCESS) rc = MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    if (rc == MPI_SUCCESS) rc = MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    return rc == MPI_SUCCESS ? AG_OK : mpi_error("init", rc);
}

ag_status ag_dist_finalize(void) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!we_initialised || finalized) return AG_OK;
    we_initialised = false;
    int rc = MPI_Finalize();
    return rc == MPI_SUCCESS ? AG_OK : mpi_error("finalize", rc);
}

int ag_dist_rank(void) {
    return world_rank;
}

int ag_dist_world_size(void) {
    return world_size;
}

void ag_dist_abort(int code) {
    MPI_Abort(MPI_COMM_WORLD, code);
}

/* ---- the communicator ---- */

typedef struct mpi_comm_state {
    double timeout_s; /* a collective still pending after this long is an error */
} mpi_comm_state;

/* A started collective and where its result must go. */
struct ag_comm_request {
    MPI_Request mpi;
    const char *op; /* name for messages */
    ag_tensor *t;   /* the tensor reduced (a reference), to write a staged result back */
    void *staged;   /* host copy of a device tensor's data (malloc), or NULL */
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The MPI type of t's elements, checking what the collectives accept. */
static ag_status check_tensor(const char *op, const ag_tensor *t, MPI_Datatype *type) {
    if (!t) return ag__error_if_none(AG_ERR_INVALID_ARG, "ag_comm %s: tensor is NULL", op);
    ag_dtype dt = ag_dtype_of(t);
    if (dt != AG_F32 && dt != AG_F64 && dt != AG_I64)
        return ag__error(AG_ERR_DTYPE,
                         "ag_comm %s on rank %d: float32, float64 or int64 needed, not %s", op,
                         world_rank, ag_dtype_name(dt));
    if (!ag_is_contiguous(t))
        return ag__error(AG_ERR_INVALID_ARG, "ag_comm %s on rank %d: the tensor must be contiguous",
                         op, world_rank);
    if (ag_numel(t) > INT32_MAX)
        return ag__error(AG_ERR_INVALID_ARG,
                         "ag_comm %s on rank %d: %lld elements exceed MPI's int count", op,
                         world_rank, (long long)ag_numel(t));
    *type = dt == AG_F32 ? MPI_FLOAT : dt == AG_F64 ? MPI_DOUBLE : MPI_INT64_T;
    return AG_OK;
}

/* Host memory holding t's elements: t's own (host-memory backends) or a staged copy the
 * request owns (other devices), filled with t's values. */
static ag_status host_buffer(const char *op, ag_tensor *t, ag_comm_request *r, void **buf) {
    *buf = ag_data_ptr(t);
    if (*buf) return AG_OK;
    size_t bytes = (size_t)ag_numel(t) * ag_dtype_size(ag_dtype_of(t));
    r->staged = malloc(bytes ? bytes : 1);
    if (!r->staged)
        return ag__error(AG_ERR_OUT_OF_MEMORY, "ag_comm %s on rank %d: %zu bytes of staging", op,
                         world_rank, bytes);
    *buf = r->staged;
    return ag_to_host(t, r->staged, bytes);
}

/* Copies a staged result back into the device tensor it came from, outside the graph. */
static ag_status write_back(ag_comm_request *r) {
    ag_tensor *t = r->t;
    ag_scope *scope = ag_scope_begin();
    bool grad_mode = ag_set_grad_enabled(false);
    ag_device saved = ag_default_device();
    ag_set_default_device(ag_device_of(t));
    ag_tensor *src = ag_from_data(ag_dtype_of(t), ag_ndim(t), ag_shape(t), r->staged);
    ag_set_default_device(saved);
    ag_status st = src && ag_copy_(t, src) ? AG_OK : ag_last_status();
    ag_set_grad_enabled(grad_mode);
    ag_scope_end(scope);
    return st;
}

static void request_free(ag_comm_request *r) {
    if (!r) return;
    ag_release(r->t);
    free(r->staged);
    free(r);
}

/* Completes r by polling until it is done or the communicator's timeout passes. */
static ag_status mpi_wait(ag_comm *comm, ag_comm_request *r) {
    if (!r) return ag__error(AG_ERR_INVALID_ARG, "ag_comm wait: request is NULL");
    const mpi_comm_state *s = comm->state;
    const double deadline = now_s() + s->timeout_s;
    int done = 0, rc = MPI_SUCCESS;
    for (unsigned polls = 0; rc == MPI_SUCCESS && !done; polls++) {
        rc = MPI_Test(&r->mpi, &done, MPI_STATUS_IGNORE);
        /* Reading the clock on every poll would cost more than the poll itself. */
        if (!done && polls % 1024 == 1023 && now_s() > deadline) {
            /* An MPI collective cannot be cancelled, so the request (and its buffer) is
             * leaked on purpose: the caller is expected to end the job. */
            return ag__error(AG_ERR_INTERNAL,
                             "ag_comm %s on rank %d of %d: not completed after %g s (a peer "
                             "rank died or stopped calling collectives; AG_DIST_TIMEOUT sets "
                             "the limit)",
                             r->op, comm->rank, comm->world_size, s->timeout_s);
        }
    }
    ag_status st = rc == MPI_SUCCESS ? AG_OK : mpi_error(r->op, rc);
    if (st == AG_OK && r->staged) st = write_back(r);
    request_free(r);
    return st;
}

/* Starts a collective on t (NULL for a barrier): root < 0 means all-reduce, else
 * broadcast from root. */
static ag_status start(ag_comm *comm, const char *op, ag_tensor *t, int root,
                       ag_comm_request **request) {
    *request = NULL;
    MPI_Datatype type = MPI_FLOAT;
    ag_status st = t ? check_tensor(op, t, &type) : AG_OK;
    if (st != AG_OK) return st;
    if (root >= comm->world_size)
        return ag__error(AG_ERR_INVALID_ARG, "ag_comm %s on rank %d: root %d outside 0..%d", op,
                         comm->rank, root, comm->world_size - 1);
    ag_comm_request *r = calloc(1, sizeof *r);
    if (!r) return ag__error(AG_ERR_OUT_OF_MEMORY, "ag_comm %s: request", op);
    r->op = op;
    r->t = t ? ag_retain(t) : NULL;
    void *buf = NULL;
    st = t ? host_buffer(op, t, r, &buf) : AG_OK;
    int rc = MPI_SUCCESS, count = t ? (int)ag_numel(t) : 0;
    if (st == AG_OK && !t)
        rc = MPI_Ibarrier(MPI_COMM_WORLD, &r->mpi);
    else if (st == AG_OK && root < 0)
        rc = MPI_Iallreduce(MPI_IN_PLACE, buf, count, type, MPI_SUM, MPI_COMM_WORLD, &r->mpi);
    else if (st == AG_OK)
        rc = MPI_Ibcast(buf, count, type, root, MPI_COMM_WORLD, &r->mpi);
    if (st == AG_OK && rc != MPI_SUCCESS) st = mpi_error(op, rc);
    if (st != AG_OK) {
        request_free(r);
        return st;
    }
    *request = r;
    return AG_OK;
}

static ag_status mpi_test(ag_comm *comm, ag_comm_request *r, bool *done) {
    int flag = 0;
    int rc = r ? MPI_Test(&r->mpi, &flag, MPI_STATUS_IGNORE) : MPI_SUCCESS;
    *done = flag != 0;
    (void)comm;
    return rc == MPI_SUCCESS ? AG_OK : mpi_error(r->op, rc);
}

static ag_status mpi_iallreduce_sum(ag_comm *comm, ag_tensor *t, ag_comm_request **request) {
    if (!request) return ag__error(AG_ERR_INVALID_ARG, "ag_comm iallreduce_sum: request is NULL");
    return start(comm, "iallreduce_sum", t, -1, request);
}

static ag_status mpi_allreduce_sum(ag_comm *comm, ag_tensor *t) {
    ag_comm_request *r;
    ag_status st = start(comm, "allreduce_sum", t, -1, &r);
    return st == AG_OK ? mpi_wait(comm, r) : st;
}

static ag_status mpi_broadcast(ag_comm *comm, ag_tensor *t, int root) {
    if (root < 0)
        return ag__error(AG_ERR_INVALID_ARG, "ag_comm broadcast on rank %d: root %d < 0",
                         comm->rank, root);
    ag_comm_request *r;
    ag_status st = start(comm, "broadcast", t, root, &r);
    return st == AG_OK ? mpi_wait(comm, r) : st;
}

static ag_status mpi_barrier(ag_comm *comm) {
    ag_comm_request *r;
    ag_status st = start(comm, "barrier", NULL, -1, &r);
    return st == AG_OK ? mpi_wait(comm, r) : st;
}

static void mpi_free(ag_comm *comm) {
    if (!comm) return;
    free(comm->state);
    free(comm);
}

ag_comm *ag_comm_mpi_new(void) {
    int initialised = 0;
    MPI_Initialized(&initialised);
    if (!initialised) {
        ag__error(AG_ERR_INVALID_ARG, "ag_comm_mpi_new: call ag_dist_init first");
        return NULL;
    }
    ag_comm *comm = calloc(1, sizeof *comm);
    mpi_comm_state *s = calloc(1, sizeof *s);
    if (!comm || !s) {
        free(comm);
        free(s);
        ag__error(AG_ERR_OUT_OF_MEMORY, "ag_comm_mpi_new: out of host memory");
        return NULL;
    }
    const char *env = getenv("AG_DIST_TIMEOUT");
    char *end = NULL;
    double timeout = env ? strtod(env, &end) : DEFAULT_TIMEOUT_S;
    s->timeout_s = env && end != env && timeout > 0 ? timeout : DEFAULT_TIMEOUT_S;
    *comm = (ag_comm){.struct_size = sizeof *comm,
                      .name = "mpi",
                      .rank = world_rank,
                      .world_size = world_size,
                      .allreduce_sum = mpi_allreduce_sum,
                      .broadcast = mpi_broadcast,
                      .barrier = mpi_barrier,
                      .iallreduce_sum = mpi_iallreduce_sum,
                      .wait = mpi_wait,
                      .free = mpi_free,
                      .state = s,
                      .test = mpi_test};
    return comm;
}

void ag_comm_free(ag_comm *comm) {
    if (comm && comm->free) comm->free(comm);
}
