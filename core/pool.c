/* Per-thread free lists for the small structs every op allocates (tensors, storages, graph
 * nodes), so a steady training loop reuses them instead of calling malloc per op. A struct
 * freed on another thread simply joins that thread's list. Lists are bounded, and drained
 * when their thread exits (a pthread key destructor, which also frees the thread's scopes)
 * or the process ends. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

/* Most free structs one thread keeps per class; beyond that they go back to malloc. Under
 * AddressSanitizer none are kept, so that it sees a struct used after its release. */
#if defined(__has_feature)
#if __has_feature(address_sanitizer) /* clang's way of saying __SANITIZE_ADDRESS__ */
#define AG_POOL_UNDER_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(AG_POOL_UNDER_ASAN)
#define POOL_LIMIT 0
#else
#define POOL_LIMIT 4096
#endif

typedef struct pool_item {
    struct pool_item *next;
} pool_item;

typedef struct pool_cache {
    pool_item *head[AG_POOL_CLASSES]; /* free structs, one list per class */
    int count[AG_POOL_CLASSES];       /* length of each list */
    bool registered;                  /* the thread-exit destructor is armed */
} pool_cache;

static const size_t class_size[AG_POOL_CLASSES] = {
    [AG_POOL_TENSOR] = sizeof(ag_tensor),
    [AG_POOL_STORAGE] = sizeof(ag_storage),
    [AG_POOL_NODE] = AG_POOL_NODE_BYTES,
};

static _Thread_local pool_cache cache;
static pthread_key_t exit_key;
static pthread_once_t exit_key_once = PTHREAD_ONCE_INIT;

/* Everything a thread caches: its scopes and its free lists. */
static void thread_exit(void *unused) {
    (void)unused;
    ag__scopes_shutdown();
    ag__pool_drain();
}

static void make_exit_key(void) {
    pthread_key_create(&exit_key, thread_exit);
}

void *ag__pool_alloc(ag_pool_class cls) {
    /* Counted whether or not the free list serves it, so a failure walk reaches it. */
    if (ag__allocation_fails()) return NULL;
    pool_item *item = cache.head[cls];
    if (item) {
        cache.head[cls] = item->next;
        cache.count[cls]--;
        memset(item, 0, class_size[cls]);
        return item;
    }
    ag__thread_cleanup_arm();
    return calloc(1, class_size[cls]);
}

void ag__thread_cleanup_arm(void) {
    if (cache.registered) return;
    /* A non-NULL value makes pthreads call thread_exit when this thread ends. */
    pthread_once(&exit_key_once, make_exit_key);
    pthread_setspecific(exit_key, &cache);
    cache.registered = true;
}

void ag__pool_free(ag_pool_class cls, void *p) {
    if (!p) return;
    if (cache.count[cls] >= POOL_LIMIT) {
        free(p);
        return;
    }
    /* A thread that only releases (structs made on other threads) drains its lists too.
     * Tested here first: this runs for every struct released. */
    if (!cache.registered) ag__thread_cleanup_arm();
    pool_item *item = p;
    item->next = cache.head[cls];
    cache.head[cls] = item;
    cache.count[cls]++;
}

void ag__pool_drain(void) {
    for (int cls = 0; cls < AG_POOL_CLASSES; cls++) {
        while (cache.head[cls]) {
            pool_item *item = cache.head[cls];
            cache.head[cls] = item->next;
            free(item);
        }
        cache.count[cls] = 0;
    }
}
