/* Batched matrix product of the CUDA backend: out[..., m, n] = a[..., m, k] @ b[..., k, n],
 * batch dims broadcast by the core (possibly stride 0).
 *
 * float32 and float64 go to cublas{S,D}gemm, float16 and bfloat16 to cublasGemmEx with
 * float accumulation. cuBLAS is column-major, so the row-major C = A B is computed as the
 * column-major C^T = B^T A^T: a row-major matrix read in place is its transpose to cuBLAS.
 * An operand whose last two dims are row- or column-contiguous is passed in place with the
 * matching transpose flag and leading dimension; any other is packed into contiguous
 * scratch first (copy_tensor), as is an output that cuBLAS cannot write in place (it is then
 * computed into scratch and copied out). The batch dims are coalesced: the innermost one
 * becomes one strided-batched call, the others a loop of calls.
 *
 * int64 uses mm_i64, a shared-memory tiled kernel over any strides with wrapping (exact)
 * arithmetic. One cuBLAS handle per device, created on first use and bound to the device's
 * stream; a mutex per handle serialises the calls of concurrent threads. TF32 is forbidden
 * unless cu_set_allow_tf32(1) or AG_CUDA_ALLOW_TF32=1 allowed it. */
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_kernel_util.cuh"

/* Key dtypes of matmul. */
#define DT_MATMUL                                                                                  \
    ((1u << AG_F32) | (1u << AG_F64) | (1u << AG_I64) | (1u << AG_F16) | (1u << AG_BF16))

/* Output tile edge of mm_i64, the k extent of one of its shared-memory steps, and the
 * threads along each tile edge (each thread computes 2 x 2 outputs). */
#define MM_TILE        32
#define MM_DEPTH       16
#define MM_SIDE        (MM_TILE / 2)
#define MM_I64_THREADS (MM_SIDE * MM_SIDE)

/* ---- TF32 setting ---- */

/* Whether float32 products may use TF32 tensor cores: -1 until first read or set, then the
 * environment's AG_CUDA_ALLOW_TF32 or the last cu_set_allow_tf32. */
static int g_allow_tf32 = -1;

/* Allows (allow != 0) or forbids TF32 from the next float32 matmul on. */
void cu_set_allow_tf32(int allow) {
    __atomic_store_n(&g_allow_tf32, allow != 0, __ATOMIC_RELEASE);
}

/* The TF32 setting, settled from the environment on first use. */
int cu_get_allow_tf32(void) {
    int allow = __atomic_load_n(&g_allow_tf32, __ATOMIC_ACQUIRE);
    if (allow >= 0) return allow;
    const char *env = getenv("AG_CUDA_ALLOW_TF32");
    const int initial = env && strcmp(env, "1") == 0;
    /* A concurrent cu_set_allow_tf32 wins over the environment. */
    if (__atomic_compare_exchange_n(&g_allow_tf32, &allow, initial, false, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE))
        return initial;
    return allow;
}

/* ---- cuBLAS handles ---- */

/* The cuBLAS handle of one device. */
typedef struct mm_blas {
    pthread_mutex_t lock;  /* held around every use of handle */
    cublasHandle_t handle; /* NULL until the device's first float matmul */
    int ordinal;           /* CUDA ordinal of the device it was created on */
} mm_blas;

static pthread_mutex_t g_blas_lock = PTHREAD_MUTEX_INITIALIZER; /* guards the two below */
static mm_blas *g_blas;  /* one per device, allocated on first use */
static int g_blas_count; /* entries of g_blas */

/* Destroys every handle and forgets the TF32 setting. */
void cu_matmul_shutdown(void) {
    pthread_mutex_lock(&g_blas_lock);
    for (int i = 0; i < g_blas_count; i++) {
        if (g_blas[i].handle) {
            /* Destroyed on its own device; errors at shutdown are of no use to anyone. */
            (void)cudaSetDevice(g_blas[i].ordinal);
            (void)cublasDestroy(g_blas[i].handle);
        }
        pthread_mutex_destroy(&g_blas[i].lock);
    }
    free(g_blas);
    g_blas = NULL;
    g_blas_count = 0;
    pthread_mutex_unlock(&g_blas_lock);
    __atomic_store_n(&g_allow_tf32, -1, __ATOMIC_RELEASE); /* a new init reads the env again */
}

/* ---- plan and messages ---- */

/* Shapes and batch walk of one matmul call. */
typedef struct mm_plan {
    const ag_kernel_tensor *a, *b, *out;
    ag_dtype dtype;
    size_t elsize;             /* bytes per element */
    long long m, k, n;         /* out[..., m, n] = a[..., m, k] @ b[..., k, n] */
    ag_kernel_tensor batch[3]; /* batch dims of out, a, b, coalesced over out's */
    long long nbatch;          /* number of matrix products */
} mm_plan;

/* Bytes per element of a matmul dtype, 0 for others. */
static size_t mm_elsize(ag_dtype dtype) {
    switch (dtype) {
    case AG_F32:
        return sizeof(float);
    case AG_F64:
        return sizeof(double);
    case AG_I64:
        return sizeof(long long);
    case AG_F16:
        return sizeof(__half);
    case AG_BF16:
        return sizeof(__nv_bfloat16);
    default:
        return 0;
    }
}

/* Checks a matmul call (dtypes, ndim >= 2, fitting shapes) and builds its plan. */
static ag_status plan_matmul(mm_plan *p, const ag_kernel_args *args) {
    ag_status st = cu_check_call(args, "matmul", 2, 1, NULL);
    if (st != AG_OK) return st;
    const ag_kernel_tensor *a = &args->inputs[0], *b = &args->inputs[1], *out = &args->outputs[0];
    const ag_dtype dtype = a->dtype; /* the key dtype */
    if (mm_elsize(dtype) == 0)
        return cu_fail(AG_ERR_DTYPE, "matmul: %s is not supported", ag_dtype_name(dtype));
    if ((st = ag_kt_check_matmul(args, dtype, cu_fail)) != AG_OK) return st;
    const int nd = out->ndim;
    p->a = a;
    p->b = b;
    p->out = out;
    p->dtype = dtype;
    p->elsize = mm_elsize(dtype);
    p->m = out->shape[nd - 2];
    p->k = a->shape[nd - 1];
    p->n = out->shape[nd - 1];
    p->batch[0] = *out;
    p->batch[1] = *a;
    p->batch[2] = *b;
    for (int i = 0; i < 3; i++) p->batch[i].ndim = nd - 2;
    p->nbatch = ag_kt_numel(&p->batch[0]);
    ag_kt_coalesce(p->batch, 3);
    return AG_OK;
}

/* The status of a cuBLAS error. */
static ag_status blas_status(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_ALLOC_FAILED:
        return AG_ERR_OUT_OF_MEMORY;
    case CUBLAS_STATUS_NOT_SUPPORTED:
    case CUBLAS_STATUS_ARCH_MISMATCH:
        return AG_ERR_UNSUPPORTED;
    case CUBLAS_STATUS_NOT_INITIALIZED:
        return AG_ERR_DEVICE;
    default:
        return AG_ERR_INTERNAL;
    }
}

/* Fails with cuBLAS error s of `call`, naming the product's shapes and dtype. */
static ag_status blas_fail(cublasStatus_t s, const char *call, const mm_plan *p) {
    char sa[160], sb[160], so[160];
    return cu_fail(blas_status(s), "matmul: %s failed for %s shapes %s @ %s -> %s: %s (%s)", call,
                   ag_dtype_name(p->dtype), ag_kt_shape_str(p->a, sa, sizeof sa),
                   ag_kt_shape_str(p->b, sb, sizeof sb), ag_kt_shape_str(p->out, so, sizeof so),
                   cublasGetStatusName(s), cublasGetStatusString(s));
}

/* The handle slot of `device` (current, with stream `stream`), its handle created on first
 * use. */
static ag_status blas_slot(const mm_plan *p, int device, cudaStream_t stream, mm_blas **out) {
    ag_status st = AG_OK;
    pthread_mutex_lock(&g_blas_lock);
    if (!g_blas) {
        const int count = cu_device_count();
        g_blas = static_cast<mm_blas *>(calloc((size_t)count, sizeof *g_blas));
        if (g_blas) {
            g_blas_count = count;
            for (int i = 0; i < count; i++) pthread_mutex_init(&g_blas[i].lock, NULL);
        } else {
            st = cu_fail(AG_ERR_OUT_OF_MEMORY, "matmul: no host memory for cuBLAS handles");
        }
    }
    mm_blas *slot = st == AG_OK ? &g_blas[device] : NULL;
    if (slot && !slot->handle) {
        cu_get_allow_tf32(); /* settles the initial setting from the environment */
        cublasHandle_t h;
        cublasStatus_t s = cublasCreate(&h);
        if (s != CUBLAS_STATUS_SUCCESS) {
            st = blas_fail(s, "cublasCreate", p);
        } else if ((s = cublasSetStream(h, stream)) != CUBLAS_STATUS_SUCCESS) {
            st = blas_fail(s, "cublasSetStream", p);
            cublasDestroy(h);
        } else {
            slot->handle = h;
            slot->ordinal = cu_device_at(device)->ordinal;
        }
    }
    pthread_mutex_unlock(&g_blas_lock);
    *out = slot;
    return st;
}

/* ---- strided copies ---- */

/* dst = 0 (all bits clear: 0 in every dtype). */
template <typename U> static __global__ void mm_zero(U *dst, cu_views<1> w, long long count) {
    CU_FOR_EACH(i, count) {
        long long off;
        cu_offsets(w, i, &off);
        dst[off] = 0;
    }
}

/* Launches cu_copy<U> over the coalesced views v = (src, dst) of `count` elements. */
template <typename U>
static void launch_copy(int dev, cudaStream_t stream, ag_kernel_tensor *v, long long count) {
    const cu_views<2> w = cu_views_of<2>(v);
    cu_copy<U><<<cu_grid_size(dev, count, CU_THREADS), CU_THREADS, 0, stream>>>(
        static_cast<const U *>(v[0].data), static_cast<U *>(v[1].data), w, count);
}

/* Launches mm_zero<U> over the coalesced view v of `count` elements. */
template <typename U>
static void launch_zero(int dev, cudaStream_t stream, ag_kernel_tensor *v, long long count) {
    const cu_views<1> w = cu_views_of<1>(v);
    mm_zero<U><<<cu_grid_size(dev, count, CU_THREADS), CU_THREADS, 0, stream>>>(
        static_cast<U *>(v->data), w, count);
}

/* dst = src (same shape, elsize-byte elements, any strides), bit for bit through unsigned
 * integers of the element size, so one kernel copies every dtype. */
static ag_status copy_tensor(int dev, cudaStream_t stream, size_t elsize,
                             const ag_kernel_tensor *src, const ag_kernel_tensor *dst) {
    ag_kernel_tensor v[2] = {*src, *dst};
    const long long count = ag_kt_numel(src);
    if (elsize == 2)
        launch_copy<unsigned short>(dev, stream, v, count);
    else if (elsize == 4)
        launch_copy<unsigned int>(dev, stream, v, count);
    else
        launch_copy<unsigned long long>(dev, stream, v, count);
    return cu_check_launch("matmul");
}

/* t = 0 (elsize-byte elements, any strides). */
static ag_status zero_tensor(int dev, cudaStream_t stream, size_t elsize,
                             const ag_kernel_tensor *t) {
    ag_kernel_tensor v = *t;
    const long long count = ag_kt_numel(t);
    if (elsize == 2)
        launch_zero<unsigned short>(dev, stream, &v, count);
    else if (elsize == 4)
        launch_zero<unsigned int>(dev, stream, &v, count);
    else
        launch_zero<unsigned long long>(dev, stream, &v, count);
    return cu_check_launch("matmul");
}

/* A row-major contiguous tensor of t's shape and dtype over `data`. */
static ag_kernel_tensor contiguous_like(const ag_kernel_tensor *t, void *data) {
    ag_kernel_tensor c = *t;
    c.data = data;
    c.offset = 0;
    long long stride = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        c.strides[d] = stride;
        stride *= t->shape[d];
    }
    return c;
}

/* ---- int64 ---- */

/* Element strides of the rows and columns of a, b and out. */
typedef struct mm_strides {
    long long ars, acs, brs, bcs, ors, ocs;
} mm_strides;

/* out = a @ b in int64 with wrapping arithmetic (unsigned, so overflow is defined and gives
 * the cpu's two's complement result). Tile t of ntiles (grid-stride) is output tile
 * (t / tiles_n % tiles_m, t % tiles_n) of matrix product t / (tiles_m * tiles_n), whose
 * matrices start at the offsets of the batch views (out, a, b). Each thread accumulates
 * rows ty and ty + MM_SIDE, columns tx and tx + MM_SIDE of the tile. */
static __global__ void __launch_bounds__(MM_I64_THREADS)
    mm_i64(const long long *a, const long long *b, long long *out, cu_views<3> batch, mm_strides s,
           long long m, long long n, long long k, long long tiles_m, long long tiles_n,
           long long ntiles) {
    __shared__ unsigned long long as[MM_TILE][MM_DEPTH + 1];
    __shared__ unsigned long long bs[MM_DEPTH][MM_TILE + 1];
    const int tx = threadIdx.x % MM_SIDE, ty = threadIdx.x / MM_SIDE;
    /* t depends on the block only, so every thread of a block meets the same barriers. */
    for (long long t = blockIdx.x; t < ntiles; t += gridDim.x) {
        const long long col0 = t % tiles_n * MM_TILE, rest = t / tiles_n;
        const long long row0 = rest % tiles_m * MM_TILE;
        long long off[3];
        cu_offsets(batch, rest / tiles_m, off);
        unsigned long long acc[2][2] = {{0, 0}, {0, 0}};
        for (long long p0 = 0; p0 < k; p0 += MM_DEPTH) {
            for (int e = threadIdx.x; e < MM_TILE * MM_DEPTH; e += MM_I64_THREADS) {
                const int r = e / MM_DEPTH, q = e % MM_DEPTH;
                const long long row = row0 + r, p = p0 + q;
                as[r][q] =
                    row < m && p < k ? (unsigned long long)a[off[1] + row * s.ars + p * s.acs] : 0;
            }
            for (int e = threadIdx.x; e < MM_DEPTH * MM_TILE; e += MM_I64_THREADS) {
                const int q = e / MM_TILE, c = e % MM_TILE;
                const long long p = p0 + q, col = col0 + c;
                bs[q][c] =
                    p < k && col < n ? (unsigned long long)b[off[2] + p * s.brs + col * s.bcs] : 0;
            }
            __syncthreads();
            for (int q = 0; q < MM_DEPTH; q++) {
                const unsigned long long a0 = as[ty][q], a1 = as[ty + MM_SIDE][q];
                const unsigned long long b0 = bs[q][tx], b1 = bs[q][tx + MM_SIDE];
                acc[0][0] += a0 * b0;
                acc[0][1] += a0 * b1;
                acc[1][0] += a1 * b0;
                acc[1][1] += a1 * b1;
            }
            __syncthreads(); /* the tiles are refilled next step */
        }
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 2; j++) {
                const long long row = row0 + ty + i * MM_SIDE, col = col0 + tx + j * MM_SIDE;
                if (row < m && col < n)
                    out[off[0] + row * s.ors + col * s.ocs] = (long long)acc[i][j];
            }
    }
}

/* Launches mm_i64 for the whole plan (m, n, k > 0). */
static ag_status launch_i64(const mm_plan *p, int dev, cudaStream_t stream) {
    ag_kernel_tensor batch[3] = {p->batch[0], p->batch[1], p->batch[2]};
    const cu_views<3> w = cu_views_of<3>(batch);
    const int nd = p->out->ndim;
    const mm_strides s = {p->a->strides[nd - 2], p->a->strides[nd - 1],   p->b->strides[nd - 2],
                          p->b->strides[nd - 1], p->out->strides[nd - 2], p->out->strides[nd - 1]};
    const long long tiles_m = (p->m + MM_TILE - 1) / MM_TILE;
    const long long tiles_n = (p->n + MM_TILE - 1) / MM_TILE;
    const long long ntiles = p->nbatch * tiles_m * tiles_n;
    mm_i64<<<cu_grid_size(dev, ntiles * MM_I64_THREADS, MM_I64_THREADS), MM_I64_THREADS, 0,
             stream>>>(cu_data<const long long>(p->a), cu_data<const long long>(p->b),
                       cu_data<long long>(p->out), w, s, p->m, p->n, p->k, tiles_m, tiles_n,
                       ntiles);
    return cu_check_launch("matmul");
}

/* ---- cuBLAS path ---- */

/* How cuBLAS reads a row-major [rows, cols] matrix with strides (rs, cs). */
typedef struct mm_layout {
    bool direct;          /* usable in place; else it goes through contiguous scratch */
    cublasOperation_t op; /* N: row-contiguous (cuBLAS sees the transpose it wants); T: column */
    int ld;               /* leading dimension */
} mm_layout;

/* The cuBLAS reading of a [rows, cols] matrix with strides (rs, cs) (ag_kt_matrix_layout). */
static mm_layout layout_of(long long rows, long long cols, long long rs, long long cs) {
    const ag_kt_layout l = ag_kt_matrix_layout(rows, cols, rs, cs);
    return mm_layout{l.direct, l.transposed ? CUBLAS_OP_T : CUBLAS_OP_N, (int)l.ld};
}

/* One operand as the cuBLAS calls see it. */
typedef struct mm_operand {
    char *base;                      /* address of element (0, 0) of the first matrix */
    long long bstrides[AG_MAX_DIMS]; /* element step per coalesced batch dim */
    cublasOperation_t op;            /* transpose flag */
    int ld;                          /* leading dimension */
    cu_scratch scratch;              /* contiguous copy, when not used in place */
} mm_operand;

/* Sets `o` to read tensor t (batch view bt) in place with layout l. */
static void use_in_place(mm_operand *o, const mm_plan *p, const ag_kernel_tensor *t,
                         const ag_kernel_tensor *bt, mm_layout l) {
    o->base = static_cast<char *>(t->data) + t->offset * (long long)p->elsize;
    for (int d = 0; d < bt->ndim; d++) o->bstrides[d] = bt->strides[d];
    o->op = l.op;
    o->ld = l.ld;
}

/* Packs input t ([..., rows, cols], batch view bt) into contiguous scratch and points `o`
 * at it. Batch dims in which t is broadcast (stride 0) are packed once and keep stride 0. */
static ag_status pack_operand(mm_operand *o, const mm_plan *p, const ag_kernel_tensor *t,
                              const ag_kernel_tensor *bt, long long rows, long long cols, int dev,
                              cudaStream_t stream) {
    ag_kernel_tensor src = *t; /* [kept batch dims..., rows, cols] */
    int nd = 0;
    for (int d = 0; d < bt->ndim; d++)
        if (bt->strides[d] != 0) {
            src.shape[nd] = bt->shape[d];
            src.strides[nd++] = bt->strides[d];
        }
    src.shape[nd] = rows;
    src.strides[nd] = t->strides[t->ndim - 2];
    src.shape[nd + 1] = cols;
    src.strides[nd + 1] = t->strides[t->ndim - 1];
    src.ndim = nd + 2;
    long long count = rows * cols;
    for (int d = bt->ndim - 1; d >= 0; d--) {
        o->bstrides[d] = bt->strides[d] != 0 ? count : 0;
        if (bt->strides[d] != 0) count *= bt->shape[d];
    }
    ag_status st = cu_scratch_alloc(dev, (size_t)count * p->elsize, "matmul", &o->scratch);
    if (st != AG_OK) return st;
    const ag_kernel_tensor dst = contiguous_like(&src, o->scratch.ptr);
    o->base = static_cast<char *>(o->scratch.ptr);
    o->op = CUBLAS_OP_N;
    o->ld = (int)cols;
    return copy_tensor(dev, stream, p->elsize, &src, &dst);
}

/* Points output operand `o` at new contiguous scratch of out's shape. */
static ag_status scratch_output(mm_operand *o, const mm_plan *p, int dev) {
    const ag_kernel_tensor *bt = &p->batch[0];
    long long step = p->m * p->n;
    for (int d = bt->ndim - 1; d >= 0; d--) {
        o->bstrides[d] = step;
        step *= bt->shape[d];
    }
    ag_status st = cu_scratch_alloc(dev, (size_t)step * p->elsize, "matmul", &o->scratch);
    o->base = static_cast<char *>(o->scratch.ptr);
    o->op = CUBLAS_OP_N;
    o->ld = (int)p->n;
    return st;
}

/* Name of the cuBLAS routine gemm_call uses, for messages. */
static const char *gemm_name(ag_dtype dtype, int count) {
    switch (dtype) {
    case AG_F32:
        return count == 1 ? "cublasSgemm" : "cublasSgemmStridedBatched";
    case AG_F64:
        return count == 1 ? "cublasDgemm" : "cublasDgemmStridedBatched";
    default:
        return count == 1 ? "cublasGemmEx" : "cublasGemmStridedBatchedEx";
    }
}

/* Queues `count` products C_i = A_i B_i (row-major) as the column-major C_i^T = B_i^T A_i^T,
 * the matrices i at pa + i * sa elements etc. */
static cublasStatus_t gemm_call(cublasHandle_t h, const mm_plan *p, const mm_operand *a,
                                const void *pa, long long sa, const mm_operand *b, const void *pb,
                                long long sb, const mm_operand *c, void *pc, long long sc,
                                int count) {
    const int m = (int)p->m, n = (int)p->n, k = (int)p->k;
    switch (p->dtype) {
    case AG_F32: {
        const float one = 1, zero = 0;
        const float *fa = static_cast<const float *>(pa), *fb = static_cast<const float *>(pb);
        float *fc = static_cast<float *>(pc);
        if (count == 1)
            return cublasSgemm(h, b->op, a->op, n, m, k, &one, fb, b->ld, fa, a->ld, &zero, fc,
                               c->ld);
        return cublasSgemmStridedBatched(h, b->op, a->op, n, m, k, &one, fb, b->ld, sb, fa, a->ld,
                                         sa, &zero, fc, c->ld, sc, count);
    }
    case AG_F64: {
        const double one = 1, zero = 0;
        const double *da = static_cast<const double *>(pa), *db = static_cast<const double *>(pb);
        double *dc = static_cast<double *>(pc);
        if (count == 1)
            return cublasDgemm(h, b->op, a->op, n, m, k, &one, db, b->ld, da, a->ld, &zero, dc,
                               c->ld);
        return cublasDgemmStridedBatched(h, b->op, a->op, n, m, k, &one, db, b->ld, sb, da, a->ld,
                                         sa, &zero, dc, c->ld, sc, count);
    }
    default: { /* float16, bfloat16: float accumulation and scalars */
        const float one = 1, zero = 0;
        const cudaDataType t = p->dtype == AG_F16 ? CUDA_R_16F : CUDA_R_16BF;
        if (count == 1)
            return cublasGemmEx(h, b->op, a->op, n, m, k, &one, pb, t, b->ld, pa, t, a->ld, &zero,
                                pc, t, c->ld, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        return cublasGemmStridedBatchedEx(h, b->op, a->op, n, m, k, &one, pb, t, b->ld, sb, pa, t,
                                          a->ld, sa, &zero, pc, t, c->ld, sc, count,
                                          CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    }
    }
}

/* Queues every product of the plan: the innermost coalesced batch dim as strided batches,
 * the outer ones as a loop. Called with the handle's lock held. */
static ag_status run_gemms(cublasHandle_t h, const mm_plan *p, const mm_operand *a,
                           const mm_operand *b, const mm_operand *c) {
    const ag_kernel_tensor *bt = &p->batch[0];
    const int bd = bt->ndim;
    const long long inner = bd > 0 ? bt->shape[bd - 1] : 1, outer = p->nbatch / inner;
    const long long sa = bd > 0 ? a->bstrides[bd - 1] : 0, sb = bd > 0 ? b->bstrides[bd - 1] : 0;
    const long long sc = bd > 0 ? c->bstrides[bd - 1] : 0;
    /* cuBLAS takes batch counts as int and is not given negative strides. */
    const long long chunk = sa >= 0 && sb >= 0 && sc >= 0 ? INT_MAX : 1;
    const long long es = (long long)p->elsize;
    for (long long o = 0; o < outer; o++) {
        long long oa = 0, ob = 0, oc = 0, rest = o;
        for (int d = bd - 2; d >= 0; d--) {
            const long long i = rest % bt->shape[d];
            rest /= bt->shape[d];
            oa += i * a->bstrides[d];
            ob += i * b->bstrides[d];
            oc += i * c->bstrides[d];
        }
        for (long long start = 0; start < inner; start += chunk) {
            const int count = (int)(inner - start < chunk ? inner - start : chunk);
            const cublasStatus_t s = gemm_call(h, p, a, a->base + (oa + start * sa) * es, sa, b,
                                               b->base + (ob + start * sb) * es, sb, c,
                                               c->base + (oc + start * sc) * es, sc, count);
            if (s != CUBLAS_STATUS_SUCCESS) return blas_fail(s, gemm_name(p->dtype, count), p);
        }
    }
    return AG_OK;
}

/* The float products of the plan through cuBLAS (m, n, k > 0). */
static ag_status run_blas(const mm_plan *p, int dev, cudaStream_t stream) {
    const long long m = p->m, k = p->k, n = p->n;
    if (m > INT_MAX || k > INT_MAX || n > INT_MAX)
        return cu_fail(AG_ERR_UNSUPPORTED, "matmul: %lld x %lld x %lld exceeds cuBLAS's int sizes",
                       m, k, n);
    const int nd = p->out->ndim;
    mm_operand a, b, c;
    a.scratch = b.scratch = c.scratch = cu_scratch{NULL, 0, dev};
    const mm_layout la = layout_of(m, k, p->a->strides[nd - 2], p->a->strides[nd - 1]);
    const mm_layout lb = layout_of(k, n, p->b->strides[nd - 2], p->b->strides[nd - 1]);
    mm_layout lc = layout_of(m, n, p->out->strides[nd - 2], p->out->strides[nd - 1]);
    if (lc.op == CUBLAS_OP_T) lc.direct = false; /* C^T is written column-major only */
    ag_status st = AG_OK;
    if (la.direct)
        use_in_place(&a, p, p->a, &p->batch[1], la);
    else
        st = pack_operand(&a, p, p->a, &p->batch[1], m, k, dev, stream);
    if (st == AG_OK && lb.direct)
        use_in_place(&b, p, p->b, &p->batch[2], lb);
    else if (st == AG_OK)
        st = pack_operand(&b, p, p->b, &p->batch[2], k, n, dev, stream);
    if (st == AG_OK && lc.direct)
        use_in_place(&c, p, p->out, &p->batch[0], lc);
    else if (st == AG_OK)
        st = scratch_output(&c, p, dev);

    mm_blas *slot = NULL;
    if (st == AG_OK) st = blas_slot(p, dev, stream, &slot);
    if (st == AG_OK) {
        pthread_mutex_lock(&slot->lock);
        const cublasMath_t math = p->dtype == AG_F32 && cu_get_allow_tf32()
                                      ? CUBLAS_TF32_TENSOR_OP_MATH
                                      : CUBLAS_DEFAULT_MATH;
        const cublasStatus_t s = cublasSetMathMode(slot->handle, math);
        st = s == CUBLAS_STATUS_SUCCESS ? run_gemms(slot->handle, p, &a, &b, &c)
                                        : blas_fail(s, "cublasSetMathMode", p);
        pthread_mutex_unlock(&slot->lock);
    }
    if (st == AG_OK && c.scratch.ptr) {
        const ag_kernel_tensor computed = contiguous_like(p->out, c.scratch.ptr);
        st = copy_tensor(dev, stream, p->elsize, &computed, p->out);
    }
    /* Stream order keeps the scratch alive for the work queued on it. */
    cu_scratch_free(&a.scratch);
    cu_scratch_free(&b.scratch);
    cu_scratch_free(&c.scratch);
    return st;
}

/* The matmul entry: validation, empty and k = 0 products, then int64 or cuBLAS. */
static ag_status matmul_entry(const ag_kernel_args *args) {
    mm_plan p = {}; /* zeroed: the compiler cannot see that plan_matmul sets what is read */
    ag_status st = plan_matmul(&p, args);
    if (st != AG_OK || p.nbatch == 0 || p.m == 0 || p.n == 0) return st;
    cudaStream_t stream;
    if ((st = cu_enter(args->device, "matmul", &stream)) != AG_OK) return st;
    if (p.k == 0) return zero_tensor(args->device, stream, p.elsize, p.out); /* empty sums */
    if (p.dtype == AG_I64) return launch_i64(&p, args->device, stream);
    return run_blas(&p, args->device, stream);
}

const cu_kernel_entry cu_matmul_kernels[] = {
    {"matmul", DT_MATMUL, matmul_entry},
    {NULL, 0, NULL},
};
