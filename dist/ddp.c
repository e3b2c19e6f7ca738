/* DistributedDataParallel (include/ag/dist.h), after PyTorch's Reducer:
 *
 * - Parameters are grouped into buckets of about bucket_cap_mb in reverse registration
 *   order, since backward produces the last layers' gradients first.
 * - A post-accumulate-grad hook on every parameter counts the gradients of its bucket;
 *   the bucket whose gradients are all in is flattened into one host buffer and its
 *   all-reduce started non-blocking. Buckets start strictly in bucket order, because MPI
 *   requires every rank to issue its collectives in the same order.
 * - ag_ddp_finish waits for the buckets (starting those still missing when unused
 *   parameters are allowed), divides by the world size and writes the averages to .grad.
 *
 * A hook cannot return an error, so the first one is kept and ag_ddp_finish reports it. */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "ag/dist.h"
#include "../core/internal.h"

typedef struct ddp_param {
    struct ag_ddp *ddp; /* back pointer: the hook's user data is the parameter */
    ag_named_tensor p;  /* name and tensor, borrowed from the module */
    int bucket;         /* its bucket */
    int64_t offset;     /* first element in the bucket's buffer */
    int64_t numel;
    uint64_t hook; /* post-accumulate-grad hook handle */
    bool ready;    /* got its gradient in this backward */
} ddp_param;

typedef struct ddp_bucket {
    int first, count;         /* params[first .. first + count) in bucket order */
    int ready;                /* of them ready in this backward */
    ag_dtype dtype;           /* of every parameter in it */
    ag_tensor *buffer;        /* flat host (cpu) tensor of all its gradients (owned) */
    ag_comm_request *request; /* the running all-reduce, or NULL */
    bool launched;            /* its all-reduce was started in this backward */
} ddp_bucket;

struct ag_ddp {
    ag_module *module;
    ag_comm *comm;
    ag_ddp_options options;
    int n_params;
    ddp_param *params; /* in bucket order (reverse registration order) */
    int n_buckets;
    ddp_bucket *buckets;
    int next_launch; /* buckets before it are launched */
    bool no_sync;
    ag_status error;   /* first error of a hook, reported by finish */
    char message[512]; /* its text */
    double wait_s;     /* seconds waited in finish since the last take */
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

ag_ddp_options ag_ddp_defaults(void) {
    return (ag_ddp_options){.bucket_cap_mb = 25.0, .find_unused_parameters = false};
}

/* Keeps the first error of a hook (the message is this thread's last error). */
static void keep_error(ag_ddp *ddp, ag_status st) {
    if (st == AG_OK || ddp->error != AG_OK) return;
    ddp->error = st;
    snprintf(ddp->message, sizeof ddp->message, "%s", ag_last_error());
}

/* Copies the bucket's gradients into its buffer (zeros for a parameter without one) and
 * starts its all-reduce. */
static ag_status launch(ag_ddp *ddp, ddp_bucket *b) {
    char *host = ag_data_ptr(b->buffer);
    size_t esize = ag_dtype_size(b->dtype);
    for (int i = b->first; i < b->first + b->count; i++) {
        const ddp_param *q = &ddp->params[i];
        ag_tensor *g = ag_tensor_grad(q->p.tensor);
        size_t bytes = (size_t)q->numel * esize;
        ag_status st = AG_OK;
        if (!g)
            memset(host + (size_t)q->offset * esize, 0, bytes);
        else
            st = ag_to_host(g, host + (size_t)q->offset * esize, bytes);
        if (st != AG_OK) return st;
    }
    b->launched = true;
    return ddp->comm->iallreduce_sum(ddp->comm, b->buffer, &b->request);
}

/* Starts, in bucket order, every bucket from next_launch whose gradients are all in. */
static ag_status launch_ready(ag_ddp *ddp) {
    while (ddp->next_launch < ddp->n_buckets) {
        ddp_bucket *b = &ddp->buckets[ddp->next_launch];
        if (b->ready < b->count) return AG_OK;
        ddp->next_launch++;
        ag_status st = launch(ddp, b);
        if (st != AG_OK) return st;
    }
    return AG_OK;
}

/* Post-accumulate-grad hook: param's gradient of this backward is final. */
static void on_grad_ready(ag_tensor *leaf, void *user) {
    (void)leaf;
    ddp_param *q = user;
    ag_ddp *ddp = q->ddp;
    if (ddp->no_sync || q->ready || ddp->error != AG_OK) return;
    q->ready = true;
    ddp->buckets[q->bucket].ready++;
    keep_error(ddp, launch_ready(ddp));
    /* MPI moves a started all-reduce along only inside MPI calls: poke the running ones
     * so that they advance while backward goes on. */
    for (int k = 0; k < ddp->next_launch && ddp->error == AG_OK; k++) {
        bool done = false;
        if (ddp->buckets[k].request)
            keep_error(ddp, ddp->comm->test(ddp->comm, ddp->buckets[k].request, &done));
    }
}

/* Groups params (registration order) into buckets in reverse order; fills ddp. */
static ag_status make_buckets(ag_ddp *ddp, const ag_named_tensor *params) {
    const double cap = ddp->options.bucket_cap_mb * 1024.0 * 1024.0;
    ddp->buckets = calloc((size_t)ddp->n_params, sizeof *ddp->buckets);
    if (!ddp->buckets) return ag__error(AG_ERR_OUT_OF_MEMORY, "ag_ddp_new: buckets");
    ddp_bucket *b = NULL;
    double bytes = 0;
    for (int i = 0; i < ddp->n_params; i++) {
        ag_tensor *t = params[ddp->n_params - 1 - i].tensor;
        ag_dtype dt = ag_dtype_of(t);
        if (dt != AG_F32 && dt != AG_F64)
            return ag__error(AG_ERR_DTYPE, "ag_ddp_new: parameter %s is %s; float32 or float64",
                             params[ddp->n_params - 1 - i].name, ag_dtype_name(dt));
        double size = (double)ag_numel(t) * (double)ag_dtype_size(dt);
        /* A parameter larger than the cap gets a bucket of its own, as in PyTorch. */
        if (!b || b->dtype != dt || (b->count > 0 && bytes + size > cap)) {
            b = &ddp->buckets[ddp->n_buckets++];
            *b = (ddp_bucket){.first = i, .dtype = dt};
            bytes = 0;
        }
        ddp->params[i] = (ddp_param){.ddp = ddp,
                                     .p = params[ddp->n_params - 1 - i],
                                     .bucket = ddp->n_buckets - 1,
                                     .offset = (int64_t)(bytes / (double)ag_dtype_size(dt)),
                                     .numel = ag_numel(t)};
        b->count++;
        bytes += size;
    }
    /* Buffers live on the cpu backend: MPI reads host memory, and ag_to_host fills them
     * from any device. */
    ag_device cpu, saved = ag_default_device();
    ag_status st = ag_device_parse("cpu", &cpu);
    if (st != AG_OK) return st;
    ag_set_default_device(cpu);
    ag_scope *scope = ag_scope_begin();
    for (int k = 0; k < ddp->n_buckets && st == AG_OK; k++) {
        ddp_bucket *bk = &ddp->buckets[k];
        const ddp_param *last = &ddp->params[bk->first + bk->count - 1];
        ag_tensor *buf = ag_zeros(bk->dtype, 1, (int64_t[]){last->offset + last->numel});
        bk->buffer = buf ? ag_keep(buf) : NULL;
        st = buf ? AG_OK : ag_last_status();
    }
    ag_scope_end(scope);
    ag_set_default_device(saved);
    return st;
}

ag_ddp *ag_ddp_new(ag_module *module, ag_comm *comm, const ag_ddp_options *options) {
    ag_ddp_options o = options ? *options : ag_ddp_defaults();
    if (!module || !comm || !(o.bucket_cap_mb > 0)) {
        ag__error(AG_ERR_INVALID_ARG, "ag_ddp_new: need a module, a communicator and "
                                      "bucket_cap_mb > 0");
        return NULL;
    }
    ag_ddp *ddp = calloc(1, sizeof *ddp);
    int n = ag_module_parameters(module, NULL, 0);
    ag_named_tensor *named = calloc((size_t)(n > 0 ? n : 1), sizeof *named);
    if (ddp) ddp->params = calloc((size_t)(n > 0 ? n : 1), sizeof *ddp->params);
    ag_status st = ddp && named && ddp->params
                       ? AG_OK
                       : ag__error(AG_ERR_OUT_OF_MEMORY, "ag_ddp_new: out of host memory");
    if (st == AG_OK) {
        *ddp = (ag_ddp){
            .module = module, .comm = comm, .options = o, .n_params = n, .params = ddp->params};
        ag_module_parameters(module, named, n);
        st = make_buckets(ddp, named);
    }
    /* Every rank starts from rank 0's weights and running statistics. */
    for (int i = 0; i < n && st == AG_OK; i++) st = comm->broadcast(comm, named[i].tensor, 0);
    int n_buffers = st == AG_OK ? ag_module_buffers(module, NULL, 0) : 0;
    ag_named_tensor *buffers = calloc((size_t)(n_buffers > 0 ? n_buffers : 1), sizeof *buffers);
    if (!buffers && st == AG_OK) st = ag__error(AG_ERR_OUT_OF_MEMORY, "ag_ddp_new: buffers");
    if (buffers) ag_module_buffers(module, buffers, n_buffers);
    for (int i = 0; i < n_buffers && st == AG_OK; i++)
        st = comm->broadcast(comm, buffers[i].tensor, 0);
    for (int i = 0; i < n && st == AG_OK; i++) {
        ddp_param *q = &ddp->params[i];
        q->hook = ag_register_post_accumulate_grad_hook(q->p.tensor, on_grad_ready, q);
        if (!q->hook) st = ag_last_status();
    }
    free(buffers);
    free(named);
    if (st != AG_OK) {
        ag_ddp_free(ddp);
        return NULL;
    }
    return ddp;
}

void ag_ddp_free(ag_ddp *ddp) {
    if (!ddp) return;
    for (int i = 0; i < ddp->n_params; i++)
        if (ddp->params[i].hook) ag_remove_hook(ddp->params[i].p.tensor, ddp->params[i].hook);
    for (int k = 0; k < ddp->n_buckets; k++) {
        /* A request still running belongs to a failed step; completing it keeps MPI's
         * collective order intact for whatever runs next. */
        if (ddp->buckets[k].request) ddp->comm->wait(ddp->comm, ddp->buckets[k].request);
        ag_release(ddp->buckets[k].buffer);
    }
    free(ddp->buckets);
    free(ddp->params);
    free(ddp);
}

void ag_ddp_no_sync(ag_ddp *ddp, bool no_sync) {
    if (ddp) ddp->no_sync = no_sync;
}

int ag_ddp_bucket_count(const ag_ddp *ddp) {
    return ddp ? ddp->n_buckets : 0;
}

double ag_ddp_take_wait_seconds(ag_ddp *ddp) {
    if (!ddp) return 0;
    double s = ddp->wait_s;
    ddp->wait_s = 0;
    return s;
}

/* Forgets this backward's bookkeeping, ready for the next one. */
static void reset_step(ag_ddp *ddp) {
    for (int i = 0; i < ddp->n_params; i++) ddp->params[i].ready = false;
    for (int k = 0; k < ddp->n_buckets; k++) {
        ddp->buckets[k].ready = 0;
        ddp->buckets[k].launched = false;
    }
    ddp->next_launch = 0;
    ddp->error = AG_OK;
    ddp->message[0] = '\0';
}

/* The error for parameters that got no gradient, in PyTorch's words. */
static ag_status unused_error(const ag_ddp *ddp) {
    char names[384] = "";
    size_t used = 0;
    /* Listed in registration order, as the user declared them. */
    for (int i = ddp->n_params - 1; i >= 0; i--) {
        if (ddp->params[i].ready || used + 1 >= sizeof names) continue;
        int w = snprintf(names + used, sizeof names - used, "%s%s", used ? " " : "",
                         ddp->params[i].p.name);
        used += w > 0 ? (size_t)w : 0;
        if (used >= sizeof names) used = sizeof names - 1;
    }
    return ag__error(AG_ERR_NO_GRAD,
                     "ag_ddp_finish on rank %d: Expected to have finished reduction in the prior "
                     "iteration before starting a new one: the module has parameters that were "
                     "not used in producing the loss. Set find_unused_parameters in "
                     "ag_ddp_options, or make sure every parameter contributes to the loss. "
                     "Parameters that did not receive grad: %s",
                     ddp->comm->rank, names);
}

/* Writes bucket b's averaged gradients (its buffer, already divided) into .grad. A
 * parameter whose gradient is NULL on every rank (used[i] == 0) keeps it NULL. */
static ag_status unpack(ag_ddp *ddp, const ddp_bucket *b, const float *used) {
    const char *host = ag_data_ptr(b->buffer);
    size_t esize = ag_dtype_size(b->dtype);
    ag_status st = AG_OK;
    bool grad_mode = ag_set_grad_enabled(false);
    for (int i = b->first; st == AG_OK && i < b->first + b->count; i++) {
        const ddp_param *q = &ddp->params[i];
        if (used && used[i] == 0) continue;
        ag_tensor *param = q->p.tensor, *g = ag_tensor_grad(param);
        const char *src = host + (size_t)q->offset * esize;
        void *dst = g && ag_is_contiguous(g) ? ag_data_ptr(g) : NULL;
        if (dst) { /* host memory: no tensor needed */
            memcpy(dst, src, (size_t)q->numel * esize);
            continue;
        }
        ag_scope *scope = ag_scope_begin();
        ag_device saved = ag_default_device();
        ag_set_default_device(ag_device_of(param));
        ag_tensor *avg = ag_from_data(b->dtype, ag_ndim(param), ag_shape(param), src);
        ag_set_default_device(saved);
        if (!avg)
            st = ag_last_status();
        else if (g)
            st = ag_copy_(g, avg) ? AG_OK : ag_last_status();
        else
            st = ag_set_grad(param, avg);
        ag_scope_end(scope);
    }
    ag_set_grad_enabled(grad_mode);
    return st;
}

/* Divides a host buffer by the world size. */
static void average(ddp_bucket *b, int world) {
    int64_t n = ag_numel(b->buffer);
    if (b->dtype == AG_F32) {
        float *v = ag_data_ptr(b->buffer);
        for (int64_t i = 0; i < n; i++) v[i] /= (float)world;
    } else {
        double *v = ag_data_ptr(b->buffer);
        for (int64_t i = 0; i < n; i++) v[i] /= (double)world;
    }
}

/* With find_unused_parameters: which parameters got a gradient on any rank (counts summed
 * over ranks, in bucket order), into *used (malloc'd). */
static ag_status count_used(ag_ddp *ddp, float **used) {
    *used = NULL;
    ag_device cpu, saved = ag_default_device();
    ag_status st = ag_device_parse("cpu", &cpu);
    if (st != AG_OK) return st;
    ag_set_default_device(cpu);
    ag_scope *scope = ag_scope_begin();
    ag_tensor *flags = ag_zeros(AG_F32, 1, (int64_t[]){ddp->n_params});
    ag_set_default_device(saved);
    float *v = flags ? ag_data_ptr(flags) : NULL;
    for (int i = 0; v && i < ddp->n_params; i++)
        v[i] = ag_tensor_grad(ddp->params[i].p.tensor) ? 1.0f : 0.0f;
    st = flags ? ddp->comm->allreduce_sum(ddp->comm, flags) : ag_last_status();
    if (st == AG_OK) {
        *used = malloc((size_t)ddp->n_params * sizeof **used);
        if (*used)
            memcpy(*used, v, (size_t)ddp->n_params * sizeof **used);
        else
            st = ag__error(AG_ERR_OUT_OF_MEMORY, "ag_ddp_finish: used flags");
    }
    ag_scope_end(scope);
    return st;
}

ag_status ag_ddp_finish(ag_ddp *ddp) {
    if (!ddp) return ag__error(AG_ERR_INVALID_ARG, "ag_ddp_finish: ddp is NULL");
    if (ddp->no_sync) return AG_OK;
    ag_status st = ddp->error;
    if (st != AG_OK) ag__error(st, "%s", ddp->message);
    bool all_ready = true;
    for (int i = 0; i < ddp->n_params; i++) all_ready = all_ready && ddp->params[i].ready;
    float *used = NULL;
    if (st == AG_OK && !all_ready && ddp->options.find_unused_parameters) {
        /* Unused parameters contribute zeros; every bucket still runs, in order. */
        for (int i = 0; i < ddp->n_params; i++)
            if (!ddp->params[i].ready) {
                ddp->params[i].ready = true;
                ddp->buckets[ddp->params[i].bucket].ready++;
            }
        st = launch_ready(ddp);
        if (st == AG_OK) st = count_used(ddp, &used);
    } else if (st == AG_OK && !all_ready) {
        st = unused_error(ddp);
    }
    /* Every started all-reduce is completed, also after an error, so that no request is
     * left behind and the ranks stay in step. */
    double start = now_s();
    for (int k = 0; k < ddp->n_buckets; k++) {
        ddp_bucket *b = &ddp->buckets[k];
        if (!b->request) continue;
        ag_status wst = ddp->comm->wait(ddp->comm, b->request);
        b->request = NULL;
        if (st == AG_OK) st = wst;
        if (st == AG_OK) {
            average(b, ddp->comm->world_size);
            st = unpack(ddp, b, used);
        }
    }
    ddp->wait_s += now_s() - start;
    free(used);
    reset_step(ddp);
    return st;
}
