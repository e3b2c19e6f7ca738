/* Files written whole or not at all: a temporary file beside the target, fsync, rename,
 * fsync of the directory. Shared by safetensors, graph pictures and traces, so that a
 * crash or a full disk never leaves a half-written file under the requested name. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "internal.h"

ag_status ag__io_error(const char *who, const char *what, const char *path) {
    return ag__error(AG_ERR_IO, "%s: %s %s: %s", who, what, path, strerror(errno));
}

/* Flushes f to disk and closes it (f is closed even on failure). */
static ag_status close_synced(FILE *f, const char *who, const char *path) {
    ag_status st =
        fflush(f) == 0 && fsync(fileno(f)) == 0 ? AG_OK : ag__io_error(who, "cannot write", path);
    if (fclose(f) != 0 && st == AG_OK) st = ag__io_error(who, "cannot write", path);
    return st;
}

/* fsyncs a directory, so a rename in it survives a crash. */
static bool sync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return false;
    bool ok = fsync(fd) == 0;
    int err = errno;
    close(fd);
    errno = err;
    return ok;
}

/* Writes through `write` to a new temporary file `tmp` (a mkstemp template) and renames it
 * to path. */
static ag_status write_and_rename(char *tmp, const char *who, const char *path,
                                  ag__file_writer write, void *user) {
    int fd = mkstemp(tmp);
    if (fd < 0) return ag__io_error(who, "cannot create a temporary file beside", path);
    /* mkstemp makes 0600 files: keep a replaced file's mode, give a new one 0644. */
    struct stat old;
    mode_t mode = stat(path, &old) == 0 ? old.st_mode & 07777 : 0644;
    FILE *f = fdopen(fd, "wb");
    ag_status st = f ? AG_OK : ag__io_error(who, "cannot write", path);
    if (!f) close(fd);
    if (st == AG_OK && fchmod(fd, mode) != 0)
        st = ag__io_error(who, "cannot set the mode of", path);
    if (st == AG_OK) st = write(f, user);
    if (f) {
        ag_status closed = close_synced(f, who, path);
        if (st == AG_OK) st = closed;
    }
    if (st == AG_OK && rename(tmp, path) != 0)
        st = ag__io_error(who, "cannot rename the temporary file to", path);
    if (st != AG_OK) unlink(tmp);
    return st;
}

ag_status ag__write_file_atomic(const char *who, const char *path, ag__file_writer write,
                                void *user) {
    const char *slash = strrchr(path, '/');
    char *dir = !slash          ? ag__strdup(".")
                : slash == path ? ag__strdup("/")
                                : ag__strndup(path, (size_t)(slash - path));
    size_t size = strlen(path) + 32;
    char *tmp = ag__malloc(size);
    ag_status st = AG_OK;
    if (!dir || !tmp) {
        st = ag__error(AG_ERR_OUT_OF_MEMORY, "%s: out of host memory writing %s", who, path);
    } else {
        snprintf(tmp, size, "%s/.%s.tmp.XXXXXX", dir, slash ? slash + 1 : path);
        st = write_and_rename(tmp, who, path, write, user);
    }
    if (st == AG_OK && !sync_dir(dir))
        st = ag__io_error(who, "renamed, but cannot sync the directory of", path);
    free(tmp);
    free(dir);
    return st;
}
