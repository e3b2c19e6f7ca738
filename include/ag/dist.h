/* ag distributed: process groups, a communicator interface with an MPI implementation, and
 * DistributedDataParallel (torch.distributed, torch.nn.parallel.DistributedDataParallel).
 * Built into libag_dist only when CMake finds MPI; docs/distributed.md describes how to run
 * it and what differs from PyTorch.
 *
 * Errors follow ag.h: a status != AG_OK and ag_last_error() naming the operation and the
 * rank ("ag_comm allreduce_sum on rank 1 of 2: ..."). */
#ifndef AG_DIST_H
#define AG_DIST_H

#include "ag/nn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the process group ---- */

/* Initialises MPI (once per process; argc/argv may be NULL) with errors returned, not
 * fatal. Idempotent. */
ag_status ag_dist_init(int *argc, char ***argv);
/* Finalises MPI if ag_dist_init started it; later calls do nothing. */
ag_status ag_dist_finalize(void);
/* This process's rank in the world (0 before ag_dist_init). */
int ag_dist_rank(void);
/* Number of processes in the world (1 before ag_dist_init). */
int ag_dist_world_size(void);
/* Ends every process of the job with exit code `code` (MPI_Abort): the way out after a
 * communication error, since the peers may be blocked in a collective. */
void ag_dist_abort(int code);

/* ---- communicators ----
 * A communicator is a table of collectives so that other transports (NCCL for CUDA
 * tensors) slot in beside MPI. Every collective is entered by all ranks in the same order.
 * Tensors must be contiguous float32, float64 or int64; host-memory tensors (cpu) are used in
 * place, tensors on other devices are staged through host memory. */

/* A pending non-blocking collective (opaque); completed and freed by the comm's wait. */
typedef struct ag_comm_request ag_comm_request;

/* A communicator: its group and its collectives. */
typedef struct ag_comm {
    size_t struct_size; /* sizeof(ag_comm) of the implementation, for appended fields */
    const char *name;   /* "mpi" */
    int rank;           /* this process's rank in the group */
    int world_size;     /* processes in the group */
    /* Sums t over all ranks, in place (every rank gets the sum). */
    ag_status (*allreduce_sum)(struct ag_comm *comm, ag_tensor *t);
    /* Copies root's t into every other rank's t (same shape and dtype everywhere). */
    ag_status (*broadcast)(struct ag_comm *comm, ag_tensor *t, int root);
    /* Returns once every rank has entered the barrier. */
    ag_status (*barrier)(struct ag_comm *comm);
    /* Starts an in-place sum of t over all ranks and returns at once; t must stay alive and
     * untouched until wait. *request receives the handle. */
    ag_status (*iallreduce_sum)(struct ag_comm *comm, ag_tensor *t, ag_comm_request **request);
    /* Completes a request (frees it, also on error): t then holds the sum. */
    ag_status (*wait)(struct ag_comm *comm, ag_comm_request *request);
    /* Frees the communicator (not the process group). */
    void (*free)(struct ag_comm *comm);
    void *state; /* the implementation's own data */
    /* Checks without blocking whether request has completed (*done), driving its progress
     * (MPI advances a non-blocking collective only inside MPI calls); wait still frees it. */
    ag_status (*test)(struct ag_comm *comm, ag_comm_request *request, bool *done);
} ag_comm;

/* A communicator over all processes on MPI_COMM_WORLD (ag_dist_init first). A collective
 * that does not complete within AG_DIST_TIMEOUT seconds (default 300) fails with an error
 * instead of hanging. Free with ag_comm_free. */
ag_comm *ag_comm_mpi_new(void);
/* Frees a communicator. NULL is ignored. */
void ag_comm_free(ag_comm *comm);

/* ---- DistributedDataParallel ---- */

/* A module replicated on every rank whose gradients are averaged across ranks (opaque). */
typedef struct ag_ddp ag_ddp;

/* DDP settings (PyTorch's defaults from ag_ddp_defaults). */
typedef struct ag_ddp_options {
    double bucket_cap_mb;        /* 25: gradients are all-reduced in buckets of about this */
    bool find_unused_parameters; /* false: a parameter without gradient is an error */
} ag_ddp_options;

/* bucket_cap_mb 25, find_unused_parameters false. */
ag_ddp_options ag_ddp_defaults(void);
/* Wraps module (borrowed; must outlive the ddp) for training over comm (borrowed):
 * broadcasts rank 0's parameters and buffers to all ranks, groups the parameters into
 * buckets in reverse registration order, and registers post-accumulate-grad hooks that
 * start each bucket's all-reduce once all its gradients are in. options NULL: defaults. */
ag_ddp *ag_ddp_new(ag_module *module, ag_comm *comm, const ag_ddp_options *options);
/* Removes the hooks and frees the buckets. NULL is ignored. */
void ag_ddp_free(ag_ddp *ddp);
/* Call after backward and before the optimizer step (PyTorch does this at the end of
 * backward by itself): waits for every bucket, launches those not started, and writes the
 * averaged gradients into .grad. Errors name the parameters that got no gradient. Does
 * nothing after a backward under no_sync. */
ag_status ag_ddp_finish(ag_ddp *ddp);
/* no_sync(true): the following backwards only accumulate gradients locally (micro-batches
 * of gradient accumulation); set it back to false before the last micro-batch, whose
 * backward and ag_ddp_finish reduce the accumulated sum. */
void ag_ddp_no_sync(ag_ddp *ddp, bool no_sync);
/* Number of buckets (for tests and tuning). */
int ag_ddp_bucket_count(const ag_ddp *ddp);
/* Seconds spent in ag_ddp_finish waiting for all-reduces since the last call (and resets
 * the count): communication that did not overlap backward. */
double ag_ddp_take_wait_seconds(ag_ddp *ddp);

#ifdef __cplusplus
}
#endif
#endif
