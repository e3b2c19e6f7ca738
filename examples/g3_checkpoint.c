/* Seed §G-3: activation checkpointing (torch.utils.checkpoint, use_reentrant=False).
 *
 * A deep MLP of 16 blocks, each Linear(512, 512) + GELU + Dropout(0.1), on a batch of 256,
 * is run forward and backward twice with the same seed: once plainly, once with every
 * block under ag_checkpoint. The checkpointed run keeps only each block's input until
 * backward and recomputes the rest there (the dropout mask included, from the restored
 * generator state). Prints the peak tensor memory of each run (ag_max_memory_allocated),
 * their ratio and times; exits non-zero unless every gradient is bitwise equal and the
 * checkpointed peak is lower. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "ag/nn.h"

enum { BLOCKS = 16, WIDTH = 512, BATCH = 256, PARAMS = 2 * BLOCKS };

/* The checkpointed function: one block (a module, the user argument) on inputs[0]. */
static ag_status run_block(void *user, int n_inputs, ag_tensor *const *inputs, int n_outputs,
                           ag_tensor **outputs) {
    (void)n_inputs;
    (void)n_outputs;
    outputs[0] = ag_module_forward(user, inputs[0]);
    return outputs[0] ? AG_OK : ag_last_status();
}

/* Seconds on a monotonic clock. */
static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* What one forward + backward leaves: the loss, the parameters' gradients (host copies),
 * the peak memory above the starting point, and the time taken. */
typedef struct step_result {
    float loss;
    float *grads[PARAMS];
    uint64_t peak_bytes;
    double seconds;
} step_result;

/* Runs mean(mlp(x)^2) forward and backward, each block checkpointed or not, from seed 7. */
static ag_status step(ag_module *const *blocks, ag_tensor *x, bool checkpointed, step_result *r) {
    ag_device dev = ag_default_device();
    ag_manual_seed(7); /* the same dropout masks in both runs */
    ag_scope *scope = ag_scope_begin();
    uint64_t start = ag_memory_allocated(dev);
    ag_reset_peak_memory(dev);
    double t0 = now();
    /* Each block in a scope of its own, its output kept by hand and the previous one let
     * go: an activation is then held only by the graph, which frees it during backward
     * (as Python's reference counting does for PyTorch), not by the step's scope. */
    ag_tensor *h = ag_retain(x);
    ag_status st = AG_OK;
    for (int i = 0; i < BLOCKS && st == AG_OK; i++) {
        ag_scope *block_scope = ag_scope_begin();
        ag_tensor *next = NULL;
        st = checkpointed ? ag_checkpoint(run_block, blocks[i], 1, &h, 1, &next)
                          : run_block(blocks[i], 1, &h, 1, &next);
        ag_keep(next);
        ag_scope_end(block_scope);
        ag_release(h);
        h = next;
    }
    ag_tensor *loss = st == AG_OK ? ag_mean(ag_mul(h, h), 0, NULL, false) : NULL;
    ag_release(h);
    st = loss ? ag_backward(loss, NULL) : ag_last_status();
    if (st == AG_OK) st = ag_synchronize(dev);
    r->seconds = now() - t0;
    r->peak_bytes = ag_max_memory_allocated(dev) - start;
    if (st == AG_OK) st = ag_to_host(loss, &r->loss, sizeof r->loss);
    ag_scope_end(scope);
    for (int i = 0; i < BLOCKS && st == AG_OK; i++) {
        ag_named_tensor p[2];
        ag_module_parameters(blocks[i], p, 2);
        for (int k = 0; k < 2 && st == AG_OK; k++) {
            ag_tensor *g = ag_tensor_grad(p[k].tensor);
            size_t bytes = (size_t)ag_numel(g) * sizeof(float);
            float **slot = &r->grads[2 * i + k];
            *slot = malloc(bytes);
            st = *slot ? ag_to_host(g, *slot, bytes) : AG_ERR_OUT_OF_MEMORY;
            ag_set_grad(p[k].tensor, NULL);
        }
    }
    return st;
}

int main(void) {
    ag_module *blocks[BLOCKS];
    ag_generator *gen = ag_generator_new(42);
    for (int i = 0; i < BLOCKS; i++)
        blocks[i] =
            ag_sequential_new(3, (ag_module *[]){ag_linear_new(WIDTH, WIDTH, true, gen),
                                                 ag_gelu_new(false), ag_dropout_new(0.1, NULL)});
    ag_tensor *x = ag_randn(gen, AG_F32, 2, (int64_t[]){BATCH, WIDTH});
    ag_generator_free(gen);
    step_result plain = {0}, ckpt = {0};
    ag_status st = x ? step(blocks, x, false, &plain) : ag_last_status();
    if (st == AG_OK) st = step(blocks, x, true, &ckpt);
    if (st != AG_OK) {
        fprintf(stderr, "g3_checkpoint: %s\n", ag_last_error());
        return 1;
    }

    int differing = 0;
    for (int p = 0; p < PARAMS; p++) {
        size_t n = p % 2 ? WIDTH : (size_t)WIDTH * WIDTH;
        differing += memcmp(plain.grads[p], ckpt.grads[p], n * sizeof(float)) != 0;
    }
    bool same_loss = memcmp(&plain.loss, &ckpt.loss, sizeof plain.loss) == 0;
    double mib = 1024.0 * 1024.0;
    printf("%d blocks of Linear(%d, %d) + GELU + Dropout(0.1), batch %d, float32\n", BLOCKS, WIDTH,
           WIDTH, BATCH);
    printf("plain:        loss %.9g  peak %8.2f MiB  %.3f s\n", plain.loss,
           (double)plain.peak_bytes / mib, plain.seconds);
    printf("checkpointed: loss %.9g  peak %8.2f MiB  %.3f s\n", ckpt.loss,
           (double)ckpt.peak_bytes / mib, ckpt.seconds);
    printf("peak memory %.2fx lower, time %.2fx; loss %s, gradients: %d of %d tensors differ\n",
           (double)plain.peak_bytes / (double)ckpt.peak_bytes, ckpt.seconds / plain.seconds,
           same_loss ? "equal" : "DIFFERENT", differing, PARAMS);
    bool ok = same_loss && differing == 0 && ckpt.peak_bytes < plain.peak_bytes;
    printf("%s\n", ok ? "ok" : "FAILED");

    for (int p = 0; p < PARAMS; p++) {
        free(plain.grads[p]);
        free(ckpt.grads[p]);
    }
    ag_release(x);
    for (int i = 0; i < BLOCKS; i++) ag_module_free(blocks[i]);
    return ok ? 0 : 1;
}
