/* Kernel execution of cudaemu: the grid of a launch runs block after block on the calling
 * thread, and the threads of a block run as fibers (ucontext) that switch only at
 * __syncthreads and at warp shuffles (see cuda_emu.h for the model).
 *
 * A fiber runs the block's threads one after another until one of them has to wait: a
 * kernel without barriers runs its whole block in one fiber, without a single switch. A
 * waiting thread keeps its fiber, and the scheduler starts another fiber for the threads
 * not yet started; the last thread to reach a barrier releases the others. When no fiber
 * can run but threads remain, the block would hang on a GPU: the threads and the source
 * lines they wait at are reported and the process aborts. So does a barrier that threads
 * reach at different source lines (undefined in CUDA). */
#include "emu_internal.h"

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>
#include <memory>
#include <mutex>
#include <string>
#include <vector>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#endif

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

namespace {

constexpr unsigned WARP = 32;             /* lanes per warp */
constexpr unsigned MAX_THREADS = 1024;    /* threads per block, as on every CUDA GPU */
constexpr size_t STACK_BYTES = 256 << 10; /* per fiber; kernels need little */
constexpr size_t MAX_SHUFFLE_BYTES = 8;   /* widest value a shuffle moves */

/* What a fiber is doing. */
enum class fiber_state {
    idle,       /* parked between threads, holds none */
    runnable,   /* runs or may run its thread */
    at_barrier, /* its thread waits in __syncthreads */
    at_shuffle, /* its thread waits in a warp shuffle */
};

/* A fiber: a stack and a context that runs block threads. */
struct fiber {
    ucontext_t context;
    char *map = nullptr; /* mmap'ed guard page and stack */
    fiber_state state = fiber_state::idle;
    unsigned thread = 0;        /* thread it runs: linear index in the block */
    const char *file = nullptr; /* where its thread waits */
    unsigned line = 0, column = 0;
    unsigned char value[MAX_SHUFFLE_BYTES];  /* shuffle: this lane's value */
    unsigned char result[MAX_SHUFFLE_BYTES]; /* shuffle: the value it receives */
    size_t size = 0;                         /* shuffle: bytes of value */
    unsigned source = 0;                     /* shuffle: lane it reads */
#if defined(__SANITIZE_ADDRESS__)
    void *fake_stack = nullptr; /* ASan's record of the stack while switched out */
#endif

    /* Unmaps the stack when its host thread ends (the fiber is parked, never resumed). */
    ~fiber() {
        if (map) munmap(map, STACK_BYTES + page_size());
    }
    /* Bytes of the guard page below the stack. */
    static size_t page_size() {
        return (size_t)sysconf(_SC_PAGESIZE);
    }
    /* Lowest address of the usable stack. */
    char *stack() const {
        return map + page_size();
    }
};

/* The block being run; written under g_launch_lock only. */
struct block_run {
    const char *kernel = nullptr; /* launch name, for reports */
    void (*fn)(void *) = nullptr; /* runs the kernel on the current thread */
    void *ctx = nullptr;
    unsigned threads = 0;                         /* per block */
    unsigned next = 0;                            /* first thread not started */
    unsigned exited = 0;                          /* threads that returned */
    unsigned at_barrier = 0;                      /* threads waiting in __syncthreads */
    unsigned at_shuffle[MAX_THREADS / WARP] = {}; /* per warp, lanes waiting in a shuffle */
    fiber *of[MAX_THREADS] = {}; /* fiber of each running thread (null: not yet or exited) */
};

/* One launch at a time in the process: __shared__ arrays are static variables. */
std::mutex g_launch_lock;
block_run g_block;

/* Fibers belong to the host thread that made them: a fiber never moves between threads. */
thread_local std::vector<std::unique_ptr<fiber>> t_fibers;
thread_local ucontext_t t_scheduler; /* the launching thread's own context */
thread_local fiber *t_current;       /* fiber running now, null in the scheduler */
#if defined(__SANITIZE_ADDRESS__)
thread_local const void *t_scheduler_bottom; /* the launching thread's stack, for ASan */
thread_local size_t t_scheduler_size;
#endif

/* Reports a kernel error (printf-style) after the launch and block it happened in, and
 * aborts: on a GPU the kernel would hang or do something undefined. */
[[noreturn]] __attribute__((format(printf, 1, 2))) void die(const char *fmt, ...) {
    fprintf(stderr,
            "cudaemu: kernel %s, block (%u,%u,%u) of grid (%u,%u,%u), %u threads: ", g_block.kernel,
            blockIdx.x, blockIdx.y, blockIdx.z, gridDim.x, gridDim.y, gridDim.z, g_block.threads);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

/* Sets threadIdx to linear index t of the block. */
void set_thread(unsigned t) {
    threadIdx.x = t % blockDim.x;
    threadIdx.y = t / blockDim.x % blockDim.y;
    threadIdx.z = t / (blockDim.x * blockDim.y);
}

/* Switches from the scheduler into f. */
void switch_into(fiber *f) {
    t_current = f;
    set_thread(f->thread);
#if defined(__SANITIZE_ADDRESS__)
    void *fake_stack = nullptr;
    __sanitizer_start_switch_fiber(&fake_stack, f->stack(), STACK_BYTES);
    swapcontext(&t_scheduler, &f->context);
    __sanitizer_finish_switch_fiber(fake_stack, nullptr, nullptr);
#else
    swapcontext(&t_scheduler, &f->context);
#endif
    t_current = nullptr;
}

/* Switches from fiber f back to the scheduler; returns when the scheduler resumes f. */
void switch_out(fiber *f) {
#if defined(__SANITIZE_ADDRESS__)
    __sanitizer_start_switch_fiber(&f->fake_stack, t_scheduler_bottom, t_scheduler_size);
    swapcontext(&f->context, &t_scheduler);
    __sanitizer_finish_switch_fiber(f->fake_stack, &t_scheduler_bottom, &t_scheduler_size);
#else
    swapcontext(&f->context, &t_scheduler);
#endif
}

/* Body of every fiber: runs the unstarted threads of the current block one after another,
 * then parks until the scheduler needs it again (possibly in a later block or launch). */
void fiber_main() {
#if defined(__SANITIZE_ADDRESS__)
    __sanitizer_finish_switch_fiber(nullptr, &t_scheduler_bottom, &t_scheduler_size);
#endif
    fiber *const f = t_current;
    for (;;) {
        block_run &b = g_block;
        while (b.next < b.threads) {
            f->thread = b.next++;
            b.of[f->thread] = f;
            set_thread(f->thread);
            b.fn(b.ctx);
            b.of[f->thread] = nullptr;
            b.exited++;
        }
        f->state = fiber_state::idle;
        switch_out(f);
    }
}

/* The idx-th fiber of this host thread, made on first use. */
fiber *fiber_at(size_t idx) {
    if (idx < t_fibers.size()) return t_fibers[idx].get();
    auto f = std::make_unique<fiber>();
    const size_t guard = fiber::page_size();
    void *map = mmap(nullptr, STACK_BYTES + guard, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (map == MAP_FAILED) die("no memory for the stack of fiber %zu", idx);
    f->map = static_cast<char *>(map);
    mprotect(f->map, guard, PROT_NONE); /* an overflow faults instead of corrupting */
    getcontext(&f->context);
    f->context.uc_stack.ss_sp = f->stack();
    f->context.uc_stack.ss_size = STACK_BYTES;
    f->context.uc_link = nullptr; /* fiber_main never returns */
    makecontext(&f->context, fiber_main, 0);
    t_fibers.push_back(std::move(f));
    return t_fibers.back().get();
}

/* What thread t of b is doing, for a deadlock report. */
std::string describe(const block_run &b, unsigned t) {
    const fiber *f = b.of[t];
    if (t >= b.next) return "not started";
    if (!f) return "exited";
    char s[512];
    snprintf(s, sizeof s, "waiting in %s at %s:%u:%u",
             f->state == fiber_state::at_barrier ? "__syncthreads" : "a shuffle", f->file, f->line,
             f->column);
    return s;
}

/* Reports a block whose remaining threads can never proceed, grouping consecutive threads
 * that do the same, and aborts. */
[[noreturn]] void deadlock(const block_run &b) {
    std::string report;
    for (unsigned t = 0; t < b.threads;) {
        const std::string what = describe(b, t);
        unsigned end = t + 1;
        while (end < b.threads && describe(b, end) == what) end++;
        char range[64];
        snprintf(range, sizeof range, end - t > 1 ? "\n  threads %u-%u: " : "\n  thread %u: ", t,
                 end - 1);
        report += range + what;
        t = end;
    }
    die("deadlock, threads wait for threads that exited or wait elsewhere:%s", report.c_str());
}

/* Runs the current block (g_block set up) to its end. */
void run_block() {
    block_run &b = g_block;
    size_t used = 0; /* fibers of this host thread taken by the block */
    while (b.exited < b.threads) {
        bool ran = false;
        for (size_t i = 0; i < used; i++) {
            fiber *f = t_fibers[i].get();
            if (f->state != fiber_state::runnable) continue;
            switch_into(f);
            ran = true;
        }
        if (ran) continue;
        if (b.next == b.threads) deadlock(b);
        fiber *f = fiber_at(used++);
        f->state = fiber_state::runnable;
        f->thread = b.next; /* the thread it takes, for switch_into's threadIdx */
        switch_into(f);
    }
}

/* Whether two threads wait at the same place of the source. */
bool same_site(const fiber *a, const fiber *b) {
    return a->line == b->line && a->column == b->column &&
           (a->file == b->file || strcmp(a->file, b->file) == 0);
}

} // namespace

cudaError_t emu_run_grid(dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream,
                         unsigned max_threads, const char *name, void (*fn)(void *), void *ctx) {
    (void)stream; /* one queue: everything runs at once, in order */
    const unsigned long long threads = (unsigned long long)block.x * block.y * block.z;
    if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu || grid.y > 65535 ||
        grid.z > 65535 || threads == 0 || threads > MAX_THREADS || block.z > 64)
        return emu_error(cudaErrorInvalidConfiguration);
    if (max_threads && threads > max_threads) return emu_error(cudaErrorLaunchOutOfResources);
    std::lock_guard<std::mutex> lock(g_launch_lock);
    block_run &b = g_block;
    b.kernel = name;
    b.fn = fn;
    b.ctx = ctx;
    b.threads = (unsigned)threads;
    gridDim = grid;
    blockDim = block;
    blockIdx = uint3{0, 0, 0};
    if (shared_bytes > 0) die("dynamic shared memory is not emulated");
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                blockIdx = uint3{x, y, z};
                b.next = b.exited = b.at_barrier = 0;
                memset(b.at_shuffle, 0, sizeof b.at_shuffle);
                run_block();
            }
    return cudaSuccess;
}

void emu_syncthreads(const char *file, unsigned line, unsigned column) {
    fiber *const f = t_current;
    block_run &b = g_block;
    f->file = file;
    f->line = line;
    f->column = column;
    if (++b.at_barrier < b.threads) {
        f->state = fiber_state::at_barrier;
        switch_out(f);
        return;
    }
    /* The last thread to arrive releases the others and goes on. */
    b.at_barrier = 0;
    for (unsigned t = 0; t < b.threads; t++) {
        fiber *g = b.of[t];
        if (g == f) continue;
        if (!same_site(g, f))
            die("__syncthreads reached at different places: thread %u at %s:%u:%u, thread %u "
                "at %s:%u:%u",
                g->thread, g->file, g->line, g->column, f->thread, f->file, f->line, f->column);
        g->state = fiber_state::runnable;
    }
}

void emu_shfl_xor(unsigned mask, void *value, size_t size, int lane_mask, int width,
                  const char *file, unsigned line, unsigned column) {
    fiber *const f = t_current;
    block_run &b = g_block;
    const unsigned warp = f->thread / WARP, lane = f->thread % WARP;
    if (mask != 0xffffffffu)
        die("shuffle at %s:%u with mask %#x: only whole warps are emulated", file, line, mask);
    if (width < 1 || width > (int)WARP || (width & (width - 1)) || lane_mask < 0 ||
        lane_mask >= (int)WARP)
        die("shuffle at %s:%u with lane mask %d and width %d", file, line, lane_mask, width);
    if ((warp + 1) * WARP > b.threads)
        die("shuffle at %s:%u in warp %u, which has fewer than %u threads", file, line, warp, WARP);
    /* As CUDA: a lane past its own group of `width` lanes reads its own value. */
    unsigned source = lane ^ (unsigned)lane_mask;
    if (source >= (lane / width + 1) * width) source = lane;
    memcpy(f->value, value, size);
    f->size = size;
    f->source = source;
    f->file = file;
    f->line = line;
    f->column = column;
    if (++b.at_shuffle[warp] < WARP) {
        f->state = fiber_state::at_shuffle;
        switch_out(f);
    } else {
        /* The last lane to arrive hands every lane its value, then releases them. */
        b.at_shuffle[warp] = 0;
        fiber *const *lanes = &b.of[warp * WARP];
        for (unsigned l = 0; l < WARP; l++) {
            fiber *g = lanes[l];
            if (!same_site(g, f) || g->size != f->size)
                die("lanes %u and %u of warp %u meet at different shuffles (%s:%u:%u and "
                    "%s:%u:%u)",
                    g->thread % WARP, lane, warp, g->file, g->line, g->column, file, line, column);
            memcpy(g->result, lanes[g->source]->value, size);
        }
        for (unsigned l = 0; l < WARP; l++)
            if (lanes[l] != f) lanes[l]->state = fiber_state::runnable;
    }
    memcpy(value, f->result, size);
}
