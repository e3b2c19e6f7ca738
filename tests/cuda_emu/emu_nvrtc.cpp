/* Plugin kernels given as CUDA C source, for cudaemu: the NVRTC calls of the CUDA backend's
 * cuda_nvrtc.c and the runtime calls that load and launch what NVRTC made (cudaLibrary*,
 * cudaLaunchKernel), so that the backend's own source-kernel code runs unchanged.
 *
 * "Compiling" runs the host C++ compiler the build used (AG_CUDAEMU_CXX) on the source after
 * cuda_emu.h, into a shared module linked against this backend library (whose emulation
 * the kernel calls); for each name expression it adds an extern "C" entry that launches
 * the kernel from cudaLaunchKernel's parameter array. The compiler's messages are the
 * program log. The "cubin" is the module's bytes behind a small header; loading it
 * dlopens a copy written to a temporary file, removed at once. */
#include "emu_internal.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <nvrtc.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <new>
#include <sstream>
#include <string>
#include <vector>

extern char **environ;

/* The entry of a kernel in a compiled module (see entries()). */
typedef cudaError_t (*entry_fn)(dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream,
                                void **params);

/* An NVRTC program: the source, its name expressions, and what compiling gave. */
struct _nvrtcProgram {
    std::string source, name;
    std::vector<std::string> expressions; /* as added, in order */
    std::vector<std::string> lowered;     /* entry symbol of each expression, once compiled */
    std::string log;                      /* the compiler's messages */
    std::vector<char> cubin;              /* CUBIN_MAGIC, module size, module bytes */
};

/* A kernel: its entry in the module. */
struct CUkern_st {
    entry_fn entry;
};

/* A loaded module and the kernels looked up in it. */
struct CUlib_st {
    void *handle; /* dlopen'ed module */
    std::vector<std::unique_ptr<CUkern_st>> kernels;
};

namespace {

/* First bytes of a cudaemu "cubin". */
constexpr char CUBIN_MAGIC[8] = {'A', 'G', 'E', 'M', 'U', 'B', 'I', 'N'};

/* The C++ text after the source: one extern "C" entry per name expression. */
std::string entries(const _nvrtcProgram &p) {
    std::string text = "\n#line 1 \"<cudaemu kernel entries>\"\n";
    for (size_t i = 0; i < p.expressions.size(); i++)
        text +=
            "extern \"C\" EMU_API cudaError_t " + p.lowered[i] +
            "(dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream, void **params) "
            "{\n    return emu_launch_params(emu_launch(grid, block, shared_bytes, stream), \"" +
            p.expressions[i] + "\", " + p.expressions[i] + ", params);\n}\n";
    return text;
}

/* The whole contents of file `path` (empty when unreadable). */
std::string read_file(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

/* Directory for temporary files: $TMPDIR, else /tmp. */
std::string temp_dir() {
    const char *dir = getenv("TMPDIR");
    return dir && *dir ? dir : "/tmp";
}

/* Path of this backend library, which compiled modules link against. */
std::string backend_path() {
    Dl_info info;
    return dladdr(reinterpret_cast<void *>(&emu_run_grid), &info) && info.dli_fname ? info.dli_fname
                                                                                    : "";
}

/* Runs the compiler on dir/kernel.cpp into dir/kernel.so with its output in dir/log;
 * returns whether it succeeded. */
bool run_compiler(const std::string &dir) {
    const std::string cpp = dir + "/kernel.cpp", so = dir + "/kernel.so", log = dir + "/log";
    const std::string backend = backend_path();
    const char *argv[] = {AG_CUDAEMU_CXX, "-std=c++20",
                          "-O1",          "-fPIC",
                          "-shared",      "-ffp-contract=off",
                          "-I",           AG_CUDAEMU_INCLUDE,
                          "-isystem",     AG_CUDAEMU_CUDA_INCLUDE,
                          "-o",           so.c_str(),
                          cpp.c_str(),    backend.c_str(),
                          nullptr};
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    pid_t pid;
    int status = -1;
    if (posix_spawn(&pid, argv[0], &actions, nullptr, const_cast<char *const *>(argv), environ) ==
        0)
        waitpid(pid, &status, 0);
    posix_spawn_file_actions_destroy(&actions);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* Whether `option` is one cuda_nvrtc.c passes (the target architecture, the C++ dialect). */
bool known_option(const char *option) {
    return strncmp(option, "--gpu-architecture=sm_", 22) == 0 || strncmp(option, "--std=", 6) == 0;
}

} // namespace

const char *nvrtcGetErrorString(nvrtcResult result) {
    switch (result) {
    case NVRTC_SUCCESS:
        return "NVRTC_SUCCESS";
    case NVRTC_ERROR_OUT_OF_MEMORY:
        return "NVRTC_ERROR_OUT_OF_MEMORY";
    case NVRTC_ERROR_INVALID_INPUT:
        return "NVRTC_ERROR_INVALID_INPUT";
    case NVRTC_ERROR_INVALID_PROGRAM:
        return "NVRTC_ERROR_INVALID_PROGRAM";
    case NVRTC_ERROR_INVALID_OPTION:
        return "NVRTC_ERROR_INVALID_OPTION";
    case NVRTC_ERROR_COMPILATION:
        return "NVRTC_ERROR_COMPILATION";
    case NVRTC_ERROR_NO_NAME_EXPRESSIONS_AFTER_COMPILATION:
        return "NVRTC_ERROR_NO_NAME_EXPRESSIONS_AFTER_COMPILATION";
    case NVRTC_ERROR_NO_LOWERED_NAMES_BEFORE_COMPILATION:
        return "NVRTC_ERROR_NO_LOWERED_NAMES_BEFORE_COMPILATION";
    case NVRTC_ERROR_NAME_EXPRESSION_NOT_VALID:
        return "NVRTC_ERROR_NAME_EXPRESSION_NOT_VALID";
    default:
        return "NVRTC_ERROR_INTERNAL_ERROR";
    }
}

nvrtcResult nvrtcCreateProgram(nvrtcProgram *prog, const char *src, const char *name,
                               int num_headers, const char *const *headers,
                               const char *const *include_names) {
    (void)headers, (void)include_names;
    if (!prog || !src || num_headers != 0) return NVRTC_ERROR_INVALID_INPUT;
    *prog = new (std::nothrow) _nvrtcProgram;
    if (!*prog) return NVRTC_ERROR_OUT_OF_MEMORY;
    (*prog)->source = src;
    (*prog)->name = name ? name : "default_program";
    return NVRTC_SUCCESS;
}

nvrtcResult nvrtcDestroyProgram(nvrtcProgram *prog) {
    if (!prog || !*prog) return NVRTC_ERROR_INVALID_PROGRAM;
    delete *prog;
    *prog = nullptr;
    return NVRTC_SUCCESS;
}

nvrtcResult nvrtcAddNameExpression(nvrtcProgram prog, const char *const name_expression) {
    if (!prog) return NVRTC_ERROR_INVALID_PROGRAM;
    if (!name_expression) return NVRTC_ERROR_INVALID_INPUT;
    if (!prog->lowered.empty()) return NVRTC_ERROR_NO_NAME_EXPRESSIONS_AFTER_COMPILATION;
    prog->expressions.push_back(name_expression);
    return NVRTC_SUCCESS;
}

nvrtcResult nvrtcCompileProgram(nvrtcProgram prog, int num_options, const char *const *options) {
    if (!prog) return NVRTC_ERROR_INVALID_PROGRAM;
    for (int i = 0; i < num_options; i++)
        if (!known_option(options[i])) {
            prog->log = std::string("cudaemu: unknown NVRTC option ") + options[i] + "\n";
            return NVRTC_ERROR_INVALID_OPTION;
        }
    prog->lowered.clear();
    for (size_t i = 0; i < prog->expressions.size(); i++)
        prog->lowered.push_back("cudaemu_entry_" + std::to_string(i));
    std::string dir = temp_dir() + "/ag_cudaemu_XXXXXX";
    if (!mkdtemp(dir.data())) return NVRTC_ERROR_INTERNAL_ERROR;
    {
        std::ofstream cpp(dir + "/kernel.cpp");
        cpp << "#include \"cuda_emu.h\"\n#line 1 \"" << prog->name << "\"\n"
            << prog->source << entries(*prog);
    }
    const bool ok = run_compiler(dir);
    prog->log = read_file(dir + "/log");
    const std::string module = ok ? read_file(dir + "/kernel.so") : "";
    for (const char *file : {"/kernel.cpp", "/kernel.so", "/log"}) unlink((dir + file).c_str());
    rmdir(dir.c_str());
    if (!ok) {
        prog->lowered.clear();
        return NVRTC_ERROR_COMPILATION;
    }
    const uint64_t size = module.size();
    prog->cubin.assign(CUBIN_MAGIC, CUBIN_MAGIC + sizeof CUBIN_MAGIC);
    prog->cubin.insert(prog->cubin.end(), reinterpret_cast<const char *>(&size),
                       reinterpret_cast<const char *>(&size) + sizeof size);
    prog->cubin.insert(prog->cubin.end(), module.begin(), module.end());
    return NVRTC_SUCCESS;
}

nvrtcResult nvrtcGetProgramLogSize(nvrtcProgram prog, size_t *size) {
    if (!prog) return NVRTC_ERROR_INVALID_PROGRAM;
    if (!size) return NVRTC_ERROR_INVALID_INPUT;
    *size = prog->log.size() + 1;
    return NVRTC_SUCCESS;
}

nvrtcResult nvrtcGetProgramLog(nvrtcProgram prog, char *log) {
    if (!prog) return NVRTC_ERROR_INVALID_PROGRAM;
    if (!log) return NVRTC_ERROR_INVALID_INPUT;
    memcpy(log, prog->log.c_str(), prog->log.size() + 1);
    return NVRTC_SUCCESS;
}

nvrtcResult nvrtcGetLoweredName(nvrtcProgram prog, const char *const name_expression,
                                const char **lowered_name) {
    if (!prog) return NVRTC_ERROR_INVALID_PROGRAM;
    if (!name_expression || !lowered_name) return NVRTC_ERROR_INVALID_INPUT;
    if (prog->lowered.empty()) return NVRTC_ERROR_NO_LOWERED_NAMES_BEFORE_COMPILATION;
    for (size_t i = 0; i < prog->expressions.size(); i++)
        if (prog->expressions[i] == name_expression) {
            *lowered_name = prog->lowered[i].c_str();
            return NVRTC_SUCCESS;
        }
    return NVRTC_ERROR_NAME_EXPRESSION_NOT_VALID;
}

nvrtcResult nvrtcGetCUBINSize(nvrtcProgram prog, size_t *size) {
    if (!prog) return NVRTC_ERROR_INVALID_PROGRAM;
    if (!size) return NVRTC_ERROR_INVALID_INPUT;
    *size = prog->cubin.size();
    return NVRTC_SUCCESS;
}

nvrtcResult nvrtcGetCUBIN(nvrtcProgram prog, char *cubin) {
    if (!prog) return NVRTC_ERROR_INVALID_PROGRAM;
    if (!cubin) return NVRTC_ERROR_INVALID_INPUT;
    memcpy(cubin, prog->cubin.data(), prog->cubin.size());
    return NVRTC_SUCCESS;
}

/* ---- loading and launching ---- */

cudaError_t cudaLibraryLoadData(cudaLibrary_t *library, const void *code,
                                cudaJitOption *jit_options, void **jit_values,
                                unsigned num_jit_options, cudaLibraryOption *library_options,
                                void **library_values, unsigned num_library_options) {
    (void)jit_options, (void)jit_values, (void)library_options, (void)library_values;
    if (!library || !code || num_jit_options || num_library_options)
        return emu_error(cudaErrorInvalidValue);
    const char *bytes = static_cast<const char *>(code);
    uint64_t size;
    if (memcmp(bytes, CUBIN_MAGIC, sizeof CUBIN_MAGIC) != 0)
        return emu_error(cudaErrorInvalidKernelImage);
    memcpy(&size, bytes + sizeof CUBIN_MAGIC, sizeof size);
    /* dlopen returns the library already loaded under a name, so every module gets a name
     * of its own: the counter keeps names unique in the process. */
    static std::atomic<unsigned> loaded{0};
    std::string name = temp_dir() + "/ag_cudaemu_" + std::to_string(loaded++) + "_XXXXXX.so";
    const int fd = mkstemps(name.data(), 3);
    if (fd < 0) return emu_error(cudaErrorMemoryAllocation);
    const char *module = bytes + sizeof CUBIN_MAGIC + sizeof size;
    bool written = true;
    for (uint64_t done = 0; written && done < size;) {
        const ssize_t n = write(fd, module + done, size - done);
        written = n > 0;
        done += written ? (uint64_t)n : 0;
    }
    close(fd);
    void *handle = written ? dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL) : nullptr;
    unlink(name.c_str()); /* the mapping stays */
    if (!handle) {
        fprintf(stderr, "cudaemu: cannot load a compiled plugin kernel: %s\n", dlerror());
        return emu_error(cudaErrorInvalidKernelImage);
    }
    *library = new CUlib_st{handle, {}};
    return cudaSuccess;
}

cudaError_t cudaLibraryGetKernel(cudaKernel_t *kernel, cudaLibrary_t library, const char *name) {
    if (!kernel || !library || !name) return emu_error(cudaErrorInvalidValue);
    auto entry = reinterpret_cast<entry_fn>(dlsym(library->handle, name));
    if (!entry) return emu_error(cudaErrorSymbolNotFound);
    library->kernels.push_back(std::make_unique<CUkern_st>(CUkern_st{entry}));
    *kernel = library->kernels.back().get();
    return cudaSuccess;
}

cudaError_t cudaLibraryUnload(cudaLibrary_t library) {
    if (!library) return emu_error(cudaErrorInvalidValue);
    dlclose(library->handle);
    delete library;
    return cudaSuccess;
}

cudaError_t cudaLaunchKernel(const void *func, dim3 grid, dim3 block, void **args,
                             size_t shared_bytes, cudaStream_t stream) {
    if (!func || !args) return emu_error(cudaErrorInvalidValue);
    /* The backend passes cudaLibraryGetKernel's handle, which CUDA accepts here too. */
    const CUkern_st *kernel = static_cast<const CUkern_st *>(func);
    return kernel->entry(grid, block, shared_bytes, stream, args);
}
