/*
 * An LD_PRELOAD library that records, in order, every operation a process
 * makes on the files under one directory that matters for what a power
 * loss keeps: file creation, writes (with their bytes), truncation,
 * fdatasync/fsync of files and directories, renames, unlinks, mkdir and
 * rmdir; and every write to the process's standard output (its
 * acknowledgements). tests/durability/powerloss.rs replays the log to
 * build the disk images a power loss at any point could leave.
 *
 * SEGLOG_IOLOG      the log file to write
 * SEGLOG_IOLOG_ROOT the absolute directory whose files are recorded
 * SEGLOG_IOLOG_KILL optional: a FIFO; a byte written to it kills the
 *                   process with SIGKILL between two recorded calls
 *
 * Every recorded call runs under one lock, with its record written right
 * after it returns, so the log's order is an order the calls really took
 * effect in: a sync is logged after it returned, an acknowledgement after
 * it was written, so an acknowledgement that depends on a sync follows it.
 *
 * A SIGKILL from outside can land between a call and its record, leaving a
 * change on disk that the log lacks. The kill through SEGLOG_IOLOG_KILL
 * cannot: a thread of this library takes the lock and sends it, so the log
 * holds every call the process made. A test needs it whenever the process
 * may still write after its last answer (the node acknowledges a sync
 * point once durable and writes the journaled records to their segments
 * after: with the Raft groups, every write's apply leaves such a write).
 *
 * Record: u8 kind, u64 a, u64 b, u32 n1, n1 bytes, u32 n2, n2 bytes
 * (little endian; the meaning of each field is by kind, see below).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

enum {
    K_CREATE = 1,  /* path (s1), inode (a): a new file's entry */
    K_TRUNC = 2,   /* inode (a), length (b) */
    K_WRITE = 3,   /* inode (a), position (b), bytes (s1) */
    K_SYNC = 4,    /* inode (a): fdatasync or fsync of a file */
    K_DIRSYNC = 5, /* path (s1): fsync of a directory */
    K_RENAME = 6,  /* from (s1), to (s2) */
    K_UNLINK = 7,  /* path (s1) */
    K_MKDIR = 8,   /* path (s1) */
    K_RMDIR = 9,   /* path (s1) */
    K_SYNCALL = 10,/* syncfs or sync */
    K_OUT = 11,    /* bytes written to standard output (s1) */
};

#define FDS 65536

static pthread_mutex_t lock = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;
static int log_fd = -1;
static char root[PATH_MAX];
static size_t root_len;
static dev_t out_dev;
static ino_t out_ino;
static int out_known;

/* Per descriptor under the root: its inode, whether it is a directory, its path. */
static struct {
    int tracked;
    int dir;
    int append;
    uint64_t ino;
    char *path;
} fds[FDS];

#define REAL(name, ret, ...) \
    static ret (*real_##name)(__VA_ARGS__); \
    if (!real_##name) real_##name = (ret (*)(__VA_ARGS__))dlsym(RTLD_NEXT, #name)

static ssize_t raw_write(int fd, const void *buf, size_t n) {
    return syscall(SYS_write, fd, buf, n);
}

static void put(const void *p, size_t n) {
    const char *c = p;
    while (n > 0) {
        ssize_t w = raw_write(log_fd, c, n);
        if (w <= 0) {
            if (w < 0 && errno == EINTR) continue;
            abort();
        }
        c += w;
        n -= (size_t)w;
    }
}

/* Writes one record with one write(2) to the O_APPEND log, so a process
 * killed while recording leaves no partial record. */
static void record(uint8_t kind, uint64_t a, uint64_t b, const void *s1, uint32_t n1,
                   const void *s2, uint32_t n2) {
    if (log_fd < 0) return;
    size_t size = 1 + 8 + 8 + 4 + n1 + 4 + n2;
    char *buf = malloc(size);
    if (!buf) abort();
    char *p = buf;
    memcpy(p, &kind, 1); p += 1;
    memcpy(p, &a, 8); p += 8;
    memcpy(p, &b, 8); p += 8;
    memcpy(p, &n1, 4); p += 4;
    if (n1) { memcpy(p, s1, n1); p += n1; }
    memcpy(p, &n2, 4); p += 4;
    if (n2) { memcpy(p, s2, n2); p += n2; }
    put(buf, size);
    free(buf);
}

static pthread_once_t once = PTHREAD_ONCE_INIT;

static void init(void);

/* Waits for a byte on the kill FIFO, then kills the process while holding
 * the lock: no recorded call is between its effect and its record. */
static void *killer(void *arg) {
    int fd = (int)(intptr_t)arg;
    char byte;
    for (;;) {
        ssize_t r = syscall(SYS_read, fd, &byte, 1);
        if (r == 1) break;
        if (r < 0 && errno == EINTR) continue;
        return NULL;
    }
    pthread_mutex_lock(&lock);
    syscall(SYS_kill, getpid(), SIGKILL);
    for (;;) pause();
}

static void setup(void) {
    pthread_once(&once, init);
}

static void init(void) {
    const char *path = getenv("SEGLOG_IOLOG");
    const char *r = getenv("SEGLOG_IOLOG_ROOT");
    if (!path || !r) return;
    strncpy(root, r, sizeof root - 1);
    root_len = strlen(root);
    log_fd = (int)syscall(SYS_openat, AT_FDCWD, path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    const char *kill_path = getenv("SEGLOG_IOLOG_KILL");
    if (kill_path) {
        /* Read and write: the open does not wait for a writer, and the FIFO
         * has a reader from now on, so the test's open does not wait either. */
        int fd = (int)syscall(SYS_openat, AT_FDCWD, kill_path, O_RDWR | O_CLOEXEC);
        pthread_t thread;
        if (fd < 0 || pthread_create(&thread, NULL, killer, (void *)(intptr_t)fd) != 0) abort();
        pthread_detach(thread);
    }
    struct stat st;
    if (fstat(1, &st) == 0) {
        out_dev = st.st_dev;
        out_ino = st.st_ino;
        out_known = 1;
    }
}

static int under_root(const char *path) {
    return log_fd >= 0 && path && path[0] == '/' && strncmp(path, root, root_len) == 0 &&
           (path[root_len] == '/' || path[root_len] == 0);
}

/* The absolute path of `name` relative to directory descriptor `dirfd`. */
static int resolve(int dirfd, const char *name, char *out) {
    if (!name) return 0;
    if (name[0] == '/' || dirfd == AT_FDCWD) {
        if (name[0] != '/') return 0;
        strncpy(out, name, PATH_MAX - 1);
        out[PATH_MAX - 1] = 0;
        return 1;
    }
    if (dirfd < 0 || dirfd >= FDS || !fds[dirfd].tracked || !fds[dirfd].path) return 0;
    snprintf(out, PATH_MAX, "%s/%s", fds[dirfd].path, name);
    return 1;
}

static void track(int fd, const char *path, int flags) {
    if (fd < 0 || fd >= FDS) return;
    struct stat st;
    if (fstat(fd, &st) != 0) return;
    free(fds[fd].path);
    fds[fd].tracked = 1;
    fds[fd].dir = S_ISDIR(st.st_mode);
    fds[fd].append = (flags & O_APPEND) != 0;
    fds[fd].ino = st.st_ino;
    fds[fd].path = strdup(path);
}

static int do_open(int dirfd, const char *name, int flags, mode_t mode, int at) {
    REAL(open64, int, const char *, int, ...);
    REAL(openat64, int, int, const char *, int, ...);
    setup();
    char path[PATH_MAX];
    int recorded = resolve(dirfd, name, path) && under_root(path);
    if (!recorded) {
        return at ? real_openat64(dirfd, name, flags, mode) : real_open64(name, flags, mode);
    }
    pthread_mutex_lock(&lock);
    struct stat before;
    int existed = lstat(path, &before) == 0;
    int fd = at ? real_openat64(dirfd, name, flags, mode) : real_open64(name, flags, mode);
    if (fd >= 0) {
        track(fd, path, flags);
        if (fd < FDS && !fds[fd].dir) {
            if (!existed) {
                record(K_CREATE, fds[fd].ino, 0, path, (uint32_t)strlen(path), NULL, 0);
            } else if (flags & O_TRUNC) {
                record(K_TRUNC, fds[fd].ino, 0, NULL, 0, NULL, 0);
            }
        }
    }
    pthread_mutex_unlock(&lock);
    return fd;
}

static mode_t mode_arg(int flags, va_list ap) {
    return (flags & (O_CREAT | O_TMPFILE)) ? (mode_t)va_arg(ap, int) : 0;
}

int open64(const char *name, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    return do_open(AT_FDCWD, name, flags, mode, 0);
}

int open(const char *name, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    return do_open(AT_FDCWD, name, flags, mode, 0);
}

int openat64(int dirfd, const char *name, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    return do_open(dirfd, name, flags, mode, 1);
}

int openat(int dirfd, const char *name, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    return do_open(dirfd, name, flags, mode, 1);
}

int close(int fd) {
    REAL(close, int, int);
    setup();
    pthread_mutex_lock(&lock);
    if (fd >= 0 && fd < FDS && fds[fd].tracked) {
        fds[fd].tracked = 0;
        free(fds[fd].path);
        fds[fd].path = NULL;
    }
    int r = real_close(fd);
    pthread_mutex_unlock(&lock);
    return r;
}

static int is_out(int fd) {
    if (!out_known) return 0;
    struct stat st;
    return fstat(fd, &st) == 0 && st.st_dev == out_dev && st.st_ino == out_ino;
}

static int file_fd(int fd) {
    return fd >= 0 && fd < FDS && fds[fd].tracked && !fds[fd].dir;
}

ssize_t write(int fd, const void *buf, size_t n) {
    REAL(write, ssize_t, int, const void *, size_t);
    setup();
    if (log_fd < 0 || (!file_fd(fd) && !is_out(fd))) return real_write(fd, buf, n);
    pthread_mutex_lock(&lock);
    ssize_t r;
    if (file_fd(fd)) {
        off_t at;
        if (fds[fd].append) {
            struct stat st;
            at = fstat(fd, &st) == 0 ? st.st_size : 0;
        } else {
            at = lseek(fd, 0, SEEK_CUR);
        }
        r = real_write(fd, buf, n);
        if (r > 0) record(K_WRITE, fds[fd].ino, (uint64_t)at, buf, (uint32_t)r, NULL, 0);
    } else {
        r = real_write(fd, buf, n);
        if (r > 0) record(K_OUT, 0, 0, buf, (uint32_t)r, NULL, 0);
    }
    pthread_mutex_unlock(&lock);
    return r;
}

ssize_t writev(int fd, const struct iovec *iov, int count) {
    REAL(writev, ssize_t, int, const struct iovec *, int);
    setup();
    if (log_fd < 0 || (!file_fd(fd) && !is_out(fd))) return real_writev(fd, iov, count);
    pthread_mutex_lock(&lock);
    off_t at = 0;
    if (file_fd(fd)) {
        if (fds[fd].append) {
            struct stat st;
            at = fstat(fd, &st) == 0 ? st.st_size : 0;
        } else {
            at = lseek(fd, 0, SEEK_CUR);
        }
    }
    ssize_t r = real_writev(fd, iov, count);
    ssize_t left = r;
    for (int i = 0; i < count && left > 0; i++) {
        size_t n = iov[i].iov_len < (size_t)left ? iov[i].iov_len : (size_t)left;
        if (file_fd(fd)) {
            record(K_WRITE, fds[fd].ino, (uint64_t)at, iov[i].iov_base, (uint32_t)n, NULL, 0);
            at += (off_t)n;
        } else {
            record(K_OUT, 0, 0, iov[i].iov_base, (uint32_t)n, NULL, 0);
        }
        left -= (ssize_t)n;
    }
    pthread_mutex_unlock(&lock);
    return r;
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t at) {
    REAL(pwrite64, ssize_t, int, const void *, size_t, off_t);
    setup();
    if (!file_fd(fd)) return real_pwrite64(fd, buf, n, at);
    pthread_mutex_lock(&lock);
    ssize_t r = real_pwrite64(fd, buf, n, at);
    if (r > 0) record(K_WRITE, fds[fd].ino, (uint64_t)at, buf, (uint32_t)r, NULL, 0);
    pthread_mutex_unlock(&lock);
    return r;
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t at) {
    return pwrite64(fd, buf, n, at);
}

ssize_t pwritev64(int fd, const struct iovec *iov, int count, off_t at) {
    REAL(pwritev64, ssize_t, int, const struct iovec *, int, off_t);
    setup();
    if (!file_fd(fd)) return real_pwritev64(fd, iov, count, at);
    pthread_mutex_lock(&lock);
    ssize_t r = real_pwritev64(fd, iov, count, at);
    ssize_t left = r;
    for (int i = 0; i < count && left > 0; i++) {
        size_t n = iov[i].iov_len < (size_t)left ? iov[i].iov_len : (size_t)left;
        record(K_WRITE, fds[fd].ino, (uint64_t)at, iov[i].iov_base, (uint32_t)n, NULL, 0);
        at += (off_t)n;
        left -= (ssize_t)n;
    }
    pthread_mutex_unlock(&lock);
    return r;
}

int ftruncate64(int fd, off_t len) {
    REAL(ftruncate64, int, int, off_t);
    setup();
    if (!file_fd(fd)) return real_ftruncate64(fd, len);
    pthread_mutex_lock(&lock);
    int r = real_ftruncate64(fd, len);
    if (r == 0) record(K_TRUNC, fds[fd].ino, (uint64_t)len, NULL, 0, NULL, 0);
    pthread_mutex_unlock(&lock);
    return r;
}

int ftruncate(int fd, off_t len) { return ftruncate64(fd, len); }

static int do_sync(int fd, int data_only) {
    REAL(fdatasync, int, int);
    REAL(fsync, int, int);
    setup();
    if (fd < 0 || fd >= FDS || !fds[fd].tracked) {
        return data_only ? real_fdatasync(fd) : real_fsync(fd);
    }
    pthread_mutex_lock(&lock);
    int r = data_only ? real_fdatasync(fd) : real_fsync(fd);
    if (r == 0 && fds[fd].tracked) {
        if (fds[fd].dir) {
            record(K_DIRSYNC, 0, 0, fds[fd].path, (uint32_t)strlen(fds[fd].path), NULL, 0);
        } else {
            record(K_SYNC, fds[fd].ino, 0, NULL, 0, NULL, 0);
        }
    }
    pthread_mutex_unlock(&lock);
    return r;
}

int fdatasync(int fd) { return do_sync(fd, 1); }
int fsync(int fd) { return do_sync(fd, 0); }

int syncfs(int fd) {
    REAL(syncfs, int, int);
    setup();
    pthread_mutex_lock(&lock);
    int r = real_syncfs(fd);
    if (r == 0) record(K_SYNCALL, 0, 0, NULL, 0, NULL, 0);
    pthread_mutex_unlock(&lock);
    return r;
}

static int path_op(uint8_t kind, const char *path, int r) {
    if (r == 0) record(kind, 0, 0, path, (uint32_t)strlen(path), NULL, 0);
    return r;
}

int rename(const char *from, const char *to) {
    REAL(rename, int, const char *, const char *);
    setup();
    if (!under_root(from) && !under_root(to)) return real_rename(from, to);
    pthread_mutex_lock(&lock);
    int r = real_rename(from, to);
    if (r == 0) record(K_RENAME, 0, 0, from, (uint32_t)strlen(from), to, (uint32_t)strlen(to));
    pthread_mutex_unlock(&lock);
    return r;
}

int renameat(int fromfd, const char *from, int tofd, const char *to) {
    REAL(renameat, int, int, const char *, int, const char *);
    setup();
    char a[PATH_MAX], b[PATH_MAX];
    if (!(resolve(fromfd, from, a) && resolve(tofd, to, b) && (under_root(a) || under_root(b)))) {
        return real_renameat(fromfd, from, tofd, to);
    }
    pthread_mutex_lock(&lock);
    int r = real_renameat(fromfd, from, tofd, to);
    if (r == 0) record(K_RENAME, 0, 0, a, (uint32_t)strlen(a), b, (uint32_t)strlen(b));
    pthread_mutex_unlock(&lock);
    return r;
}

int unlink(const char *path) {
    REAL(unlink, int, const char *);
    setup();
    if (!under_root(path)) return real_unlink(path);
    pthread_mutex_lock(&lock);
    int r = path_op(K_UNLINK, path, real_unlink(path));
    pthread_mutex_unlock(&lock);
    return r;
}

int unlinkat(int dirfd, const char *name, int flags) {
    REAL(unlinkat, int, int, const char *, int);
    setup();
    char path[PATH_MAX];
    if (!(resolve(dirfd, name, path) && under_root(path))) return real_unlinkat(dirfd, name, flags);
    pthread_mutex_lock(&lock);
    int r = path_op((flags & AT_REMOVEDIR) ? K_RMDIR : K_UNLINK, path,
                    real_unlinkat(dirfd, name, flags));
    pthread_mutex_unlock(&lock);
    return r;
}

int mkdir(const char *path, mode_t mode) {
    REAL(mkdir, int, const char *, mode_t);
    setup();
    if (!under_root(path)) return real_mkdir(path, mode);
    pthread_mutex_lock(&lock);
    int r = path_op(K_MKDIR, path, real_mkdir(path, mode));
    pthread_mutex_unlock(&lock);
    return r;
}

int rmdir(const char *path) {
    REAL(rmdir, int, const char *);
    setup();
    if (!under_root(path)) return real_rmdir(path);
    pthread_mutex_lock(&lock);
    int r = path_op(K_RMDIR, path, real_rmdir(path));
    pthread_mutex_unlock(&lock);
    return r;
}
