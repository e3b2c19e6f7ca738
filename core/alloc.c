/* Host allocation for libag, and the debug switch that makes one allocation fail.
 *
 * Every allocation libag makes asks ag__allocation_fails() first: these malloc wrappers, the
 * struct pools (core/pool.c, even when a struct comes from a free list) and every storage's
 * device buffer (core/tensor.c, before the backend's alloc). With
 * ag_debug_fail_allocation(n) armed, the n-th of them on the arming thread fails as if
 * memory ran out, so a test can walk n over every allocation of a training step and check
 * each error path (tests/test_alloc_failure.c). Counting is per thread so that the walk is
 * deterministic whatever other threads do. */
#include <stdlib.h>
#include <string.h>
#include "internal.h"

static _Thread_local uint64_t allocations; /* counted since the last ag_debug_fail_allocation */
static _Thread_local uint64_t fail_at;     /* the allocation to fail; 0: none */
int ag__allocations_counted;               /* see internal.h */

void ag_debug_fail_allocation(uint64_t n) {
    __atomic_store_n(&ag__allocations_counted, 1, __ATOMIC_RELAXED);
    allocations = 0;
    fail_at = n;
}

uint64_t ag_debug_allocation_count(void) {
    return allocations;
}

bool ag__allocation_counted_fails(void) {
    return ++allocations == fail_at;
}

void *ag__malloc(size_t size) {
    return ag__allocation_fails() ? NULL : malloc(size);
}

void *ag__calloc(size_t count, size_t size) {
    return ag__allocation_fails() ? NULL : calloc(count, size);
}

void *ag__realloc(void *p, size_t size) {
    return ag__allocation_fails() ? NULL : realloc(p, size);
}

char *ag__strdup(const char *s) {
    return ag__allocation_fails() ? NULL : strdup(s);
}

char *ag__strndup(const char *s, size_t n) {
    return ag__allocation_fails() ? NULL : strndup(s, n);
}
