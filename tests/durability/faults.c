/* The disk-fault shim of tests/durability/faults.rs, which says what each
 * flag file does; loaded into the seglog binary with LD_PRELOAD. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

static int flag(const char *name, int consume) {
    const char *dir = getenv("SEGLOG_FAULTS");
    if (!dir) return 0;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (consume) return unlink(path) == 0;
    return access(path, F_OK) == 0;
}

static int regular(int fd) {
    struct stat st;
    return fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
}

static int full(int fd) { return regular(fd) && flag("enospc", 0); }

static size_t shorten(int fd, size_t n) {
    return n > 7 && regular(fd) && flag("short", 0) ? 7 : n;
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    if (flag("fdatasync-eio", 1) || flag("fdatasync-eio-all", 0)) { errno = EIO; return -1; }
    return real(fd);
}

ssize_t write(int fd, const void *buf, size_t n) {
    static ssize_t (*real)(int, const void *, size_t);
    if (!real) real = (ssize_t (*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
    if (full(fd)) { errno = ENOSPC; return -1; }
    return real(fd, buf, shorten(fd, n));
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t at) {
    static ssize_t (*real)(int, const void *, size_t, off_t);
    if (!real) real = (ssize_t (*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT, "pwrite64");
    if (full(fd)) { errno = ENOSPC; return -1; }
    return real(fd, buf, shorten(fd, n), at);
}

ssize_t pwritev64(int fd, const struct iovec *iov, int count, off_t at) {
    static ssize_t (*real)(int, const struct iovec *, int, off_t);
    if (!real) real = (ssize_t (*)(int, const struct iovec *, int, off_t))dlsym(RTLD_NEXT, "pwritev64");
    if (full(fd)) { errno = ENOSPC; return -1; }
    if (count > 0 && iov[0].iov_len > 7 && regular(fd) && flag("short", 0))
        return real(fd, iov, 1, at) > 0 ? 7 : -1;
    return real(fd, iov, count, at);
}
