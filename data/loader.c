/* Minibatch loader: a per-epoch order of sample indices (seeded Fisher-Yates), split into
 * shards like torch's DistributedSampler, gathered with ag_index_select along dim 0 so the
 * batches are built on whatever device holds the data. */
#include <stdlib.h>
#include <string.h>
#include "ag/data.h"
#include "../core/internal.h"

struct ag_loader {
    ag_tensor *inputs, *targets; /* references held by the loader */
    ag_loader_options options;
    int64_t samples; /* extent of dim 0 */
    int64_t count;   /* indices of this shard per epoch */
    int64_t *order;  /* this shard's indices for the current epoch */
    int64_t *all;    /* scratch: the whole epoch's order, padded to count * world_size */
    int64_t next;    /* position in order of the next batch */
};

/* splitmix64 (Steele, Lea, Flood 2014): a full-period 64-bit generator whose outputs pass
 * BigCrush, enough for shuffling and cheap to seed from any integer. */
static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* Uniform integer in [0, n) without modulo bias (rejects the incomplete last block). */
static uint64_t below(uint64_t *state, uint64_t n) {
    uint64_t limit = UINT64_MAX - UINT64_MAX % n, r;
    do r = splitmix64(state);
    while (r >= limit);
    return r % n;
}

/* Creates a loader over inputs and targets (see data.h). */
ag_loader *ag_loader_new(ag_tensor *inputs, ag_tensor *targets, const ag_loader_options *options) {
    if (!inputs || !targets || !options) {
        ag__error_if_none(AG_ERR_INVALID_ARG, "ag_loader_new: inputs, targets or options is NULL");
        return NULL;
    }
    const ag_loader_options *o = options;
    if (o->batch_size <= 0 || o->world_size < 1 || o->rank < 0 || o->rank >= o->world_size) {
        ag__error(AG_ERR_INVALID_ARG,
                  "ag_loader_new: need batch_size > 0 and 0 <= rank < world_size, got "
                  "batch_size %lld, rank %d, world_size %d",
                  (long long)o->batch_size, o->rank, o->world_size);
        return NULL;
    }
    if (ag_ndim(inputs) < 1 || ag_ndim(targets) < 1 || ag_size(inputs, 0) != ag_size(targets, 0)) {
        char si[160], st[160];
        ag_shape_str(inputs, si, sizeof si);
        ag_shape_str(targets, st, sizeof st);
        ag__error(AG_ERR_SHAPE,
                  "ag_loader_new: inputs %s and targets %s must have dim 0 of the same extent", si,
                  st);
        return NULL;
    }
    ag_loader *l = ag__calloc(1, sizeof *l);
    int64_t samples = ag_size(inputs, 0);
    /* As DistributedSampler: every shard gets ceil(N / world_size) indices. */
    int64_t count = (samples + o->world_size - 1) / o->world_size;
    if (l) {
        l->all = ag__malloc((size_t)(count * o->world_size + 1) * sizeof *l->all);
        l->order = ag__malloc((size_t)(count + 1) * sizeof *l->order);
    }
    if (!l || !l->all || !l->order) {
        ag_loader_free(l);
        ag__error(AG_ERR_OUT_OF_MEMORY, "ag_loader_new: out of host memory for %lld indices",
                  (long long)samples);
        return NULL;
    }
    l->inputs = ag_retain(inputs);
    l->targets = ag_retain(targets);
    l->options = *o;
    l->samples = samples;
    l->count = count;
    ag_loader_set_epoch(l, 0);
    return l;
}

/* Frees a loader and drops its references. */
void ag_loader_free(ag_loader *loader) {
    if (!loader) return;
    ag_release(loader->inputs);
    ag_release(loader->targets);
    free(loader->all);
    free(loader->order);
    free(loader);
}

/* Computes the order of epoch `epoch` and rewinds to its first batch. */
void ag_loader_set_epoch(ag_loader *loader, uint64_t epoch) {
    if (!loader) return;
    int64_t n = loader->samples, world = loader->options.world_size;
    int64_t *all = loader->all;
    for (int64_t i = 0; i < n; i++) all[i] = i;
    if (loader->options.shuffle) {
        uint64_t state = loader->options.seed + epoch;
        for (int64_t i = n - 1; i > 0; i--) {
            int64_t j = (int64_t)below(&state, (uint64_t)i + 1);
            int64_t t = all[i];
            all[i] = all[j];
            all[j] = t;
        }
    }
    /* Pad by wrapping around (repeatedly if the data set is smaller than the padding) so
     * each shard has `count` indices; shard r takes every world-th index from r. */
    for (int64_t i = n; i < loader->count * world; i++) all[i] = all[i - n];
    for (int64_t i = 0; i < loader->count; i++)
        loader->order[i] = all[i * world + loader->options.rank];
    loader->next = 0;
}

/* Batches per epoch of this shard. */
int64_t ag_loader_batches(const ag_loader *loader) {
    if (!loader) return 0;
    int64_t bs = loader->options.batch_size;
    return loader->options.drop_last ? loader->count / bs : (loader->count + bs - 1) / bs;
}

/* Gathers the rows `index` (host int64) of t on t's device. */
static ag_tensor *gather_rows(ag_tensor *t, int64_t len, const int64_t *index) {
    ag_tensor *idx = ag_to_device(ag_from_i64(index, 1, (int64_t[]){len}), ag_device_of(t));
    return ag_index_select(t, 0, idx);
}

/* Next batch of the epoch (see data.h). */
bool ag_loader_next(ag_loader *loader, ag_tensor **inputs, ag_tensor **targets) {
    if (inputs) *inputs = NULL;
    if (targets) *targets = NULL;
    if (!loader || !inputs || !targets) {
        ag__error(AG_ERR_INVALID_ARG, "ag_loader_next: loader, inputs or targets is NULL");
        return false;
    }
    if (loader->next >= ag_loader_batches(loader)) return false;
    int64_t bs = loader->options.batch_size, start = loader->next * bs;
    int64_t len = loader->count - start < bs ? loader->count - start : bs;
    /* The index tensors are temporaries of an inner scope; the two batches are handed to
     * the caller's scope as op results are. */
    ag_scope *scope = ag_scope_begin();
    ag_tensor *x = ag_retain(gather_rows(loader->inputs, len, loader->order + start));
    ag_tensor *y = ag_retain(gather_rows(loader->targets, len, loader->order + start));
    ag_scope_end(scope);
    if (!x || !y) {
        ag_release(x);
        ag_release(y);
        return false;
    }
    loader->next++;
    *inputs = ag__scope_adopt(x);
    *targets = ag__scope_adopt(y);
    if (*inputs && *targets) return true;
    /* Out of memory growing the scope: what was adopted belongs to it, the rest is freed. */
    *inputs = *targets = NULL;
    return false;
}
